"""The main job on the embedded default: source fine-tuning and the zero-shot
per-language table, whose graded pattern is what makes the benchmark a fair
test bed (issue: foundation, item 5)."""

import csv

import numpy as np
import pytest

from conlst_ray import run as run_mod
from conlst_ray.config import load_config
from conlst_ray.data.corpora import target_corpus
from conlst_ray.model import ConlstEncoder
from conlst_ray.training import encode_table, predict_proba

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    args = [f"output_dir={out}", "run_name=demo", "seed=0"]
    assert run_mod.main(args) == 0
    return out / "demo", args


def read_table(run_dir):
    with open(run_dir / "results" / "zero_shot.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    return {k: float(v) for k, v in rows["zero-shot (dev)"].items() if k != "model"}


def test_zero_shot_table_shows_the_graded_pattern(finished_run):
    run_dir, _ = finished_run
    acc = read_table(run_dir)
    targets = ["near", "mid", "far", "distant"]
    assert acc["src"] >= 85.0                                   # high source accuracy
    assert all(acc[t] >= 45.0 for t in targets)                 # clearly above chance (33.3)
    assert all(acc[t] <= acc["src"] - 3.0 for t in targets)     # clearly below the source
    assert [acc[t] for t in targets] == sorted((acc[t] for t in targets), reverse=True)
    assert acc["near"] - acc["distant"] >= 15.0                 # measured: about 26 points
    assert (run_dir / "results" / "zero_shot.md").read_text().startswith("| model | src | near")


def test_wrong_pseudo_labels_sit_in_the_high_confidence_band_too(finished_run):
    run_dir, _ = finished_run
    cfg = load_config(run_dir / "config.yaml")
    model = ConlstEncoder.load(run_dir / "source" / "model")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir / "source" / "model")
    data = encode_table(tok, target_corpus(cfg.data, "train"), cfg.data.max_length)
    q = predict_proba(model, data, tok.pad_token_id)
    conf, wrong = q.max(-1), q.argmax(-1) != data.labels
    langs = np.asarray(data.langs)
    for lang in cfg.data.target_langs:
        high = (langs == lang) & (conf > 0.9)
        low_mid = (langs == lang) & (conf <= 0.9)
        # measured on seed 0: 9 % (near) to 26 % (distant) of the high band is wrong
        assert wrong[high].mean() >= 0.04, lang
        assert wrong[low_mid].mean() > wrong[high].mean(), lang
    distant_high = (langs == "distant") & (conf > 0.9)
    near_high = (langs == "near") & (conf > 0.9)
    assert wrong[distant_high].mean() > wrong[near_high].mean()


def test_resume_skips_the_finished_source_stage(finished_run, capsys):
    run_dir, args = finished_run
    weights = run_dir / "source" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert run_mod.main(args + ["--resume"]) == 0
    assert weights.stat().st_mtime_ns == before
    assert "[source] done already" in capsys.readouterr().out


def test_existing_run_dir_without_resume_is_refused(finished_run):
    _, args = finished_run
    with pytest.raises(FileExistsError, match="--resume"):
        run_mod.main(args)


def test_bad_override_exits_with_a_message(capsys):
    assert run_mod.main(["conl.gamma=1.5"]) == 2
    assert "conl.gamma" in capsys.readouterr().err
