"""experiments/real_gain.py, the real-model study, at tiny size
on the CPU (a tiny BERT, the mBERT vocabulary, a few hundred real MultiNLI
and XNLI rows): every row runs, the probes change what they claim to, the
sanity row leaves the model bit for bit, and a rerun continues from the
rows on disk. The study itself is a GPU job; this is what keeps it from
being debugged there."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session, shared_data):
    from experiments import real_gain  # the repository root is on sys.path under python -m pytest

    out = tmp_path_factory.mktemp("gain")
    args = ["--tiny", "--out", str(out / "runs"), "--docs", str(out / "docs")]
    assert real_gain.main(args) == 0
    return real_gain, out, args, json.loads((out / "docs" / "real_gain.json").read_text())["0"]


def test_every_row_runs_from_one_source_model_kept_at_its_best_english_epoch(study):
    real_gain, _, _, rows = study
    assert list(rows) == ["zero-shot"] + [r.name for r in real_gain.ROWS]
    curve = rows["zero-shot"]["source_curve"]
    assert [c["epoch"] for c in curve] == [0, 1, 2]
    best = max(c["source_dev_acc"] for c in curve)
    assert rows["zero-shot"]["signals"]["source_dev_acc"] == pytest.approx(best)   # the best epoch is the one kept
    assert {"en", "de", "sw", "recall_entailment", "recall_neutral"} <= set(rows["zero-shot"]["scores"])
    assert rows[real_gain.CONL_PAPER]["start"] == "zero-shot"
    conlst = next(n for n in rows if n.startswith("CoNLST"))
    assert rows[conlst]["start"] == real_gain.CONL_PAPER


def test_the_sanity_row_leaves_the_model_exactly_as_it_was(study):
    _, _, _, rows = study
    sanity, zero = rows["CoNL, learning rate 0 (sanity)"], rows["zero-shot"]
    assert sanity["steps"] > 0 and "loss_clcs" in sanity["epochs"][0]       # it did train, at rate 0
    assert sanity["change_encoder"] == sanity["change_classifier"] == sanity["change_contrastive_head"] == 0.0
    assert sanity["scores"] == zero["scores"]
    assert sanity["signals"]["target_confidence"] == zero["signals"]["target_confidence"]
    assert sanity["signals"]["agreement_with_previous"] == 1.0
    paper = rows["CoNL, paper settings"]
    assert paper["change_encoder"] > 0 and paper["signals"]["target_confidence"] != zero["signals"]["target_confidence"]


def test_each_probe_changes_the_one_thing_it_names(study):
    _, _, _, rows = study
    frozen = rows["CoNL, classification head frozen"]
    assert frozen["change_classifier"] == 0.0 and frozen["change_encoder"] > 0
    cl_only, clcs_only = rows["CoNL, L_CL only"]["epochs"][0], rows["CoNL, L_CLCS only"]["epochs"][0]
    assert "loss_clcs" not in cl_only and "loss_cl" in cl_only
    assert "loss_cl" not in clcs_only and "loss_clcs" in clcs_only
    assert rows["CoNL, L_CLCS only"]["change_classifier"] > 0
    per_class = rows["CoNL, gamma per language and class (top 30 %)"]["epochs"][0]
    assert any(k.startswith("gamma_de/") for k in per_class)               # a gamma per (language, class)
    oracle = rows["self-training oracle: selected rows carry gold labels"]["epochs"][0]
    assert oracle["trained_label_acc"] == 1.0 > oracle["selected_pseudo_label_acc"]
    plain = rows["self-training, class quantile (no CoNL)"]["epochs"][0]
    assert plain["trained_label_acc"] == pytest.approx(plain["selected_pseudo_label_acc"])
    assert 0 < plain["selected_share"] < 1


def test_the_report_grades_the_label_free_rule_and_a_rerun_reuses_finished_rows(study):
    real_gain, out, args, rows = study
    text = (out / "docs" / "REAL_GAIN.md").read_text()
    assert "scores identical to zero-shot in every language" in text and "weight change exactly 0" in text
    n_chains = len(real_gain.ROWS) - 2   # the corrected zero-shot is a candidate in every chain; EM is its alternative
    assert f"of {n_chains}** chains" in text and "points of target average in all" in text
    assert "zero-shot -> zero-shot + prior (source prior) -> self-training, clean rows" in text
    for row in real_gain.ROWS:
        assert row.name in text
    assert real_gain.main(args) == 0                                      # nothing left to train
    again = json.loads((out / "docs" / "real_gain.json").read_text())["0"]
    assert {n: r["scores"] for n, r in again.items()} == {n: r["scores"] for n, r in rows.items()}
    assert [r.get("seconds") for r in again.values()] == [r.get("seconds") for r in rows.values()]


def test_a_prior_row_trains_nothing_and_corrects_its_start_per_target_language(study):
    real_gain, _, _, rows = study
    free, zero = rows[real_gain.ZS_PRIOR], rows["zero-shot"]
    assert free["signals"]["source_dev_acc"] == zero["signals"]["source_dev_acc"]   # English is not corrected
    assert free["scores"]["en"] == zero["scores"]["en"]
    assert free["signals"]["corrected_from"] == "zero-shot"
    assert set(free["bias"]) == {"de", "sw"} and all(len(b) == 3 for b in free["bias"].values())
    assert "steps" not in free                                                        # no training
    assert rows["self-training, source term only (ssl.lambda_u=0)"]["overrides"]["ssl.lambda_u"] == 0.0
