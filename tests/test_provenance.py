"""A run directory always describes its own results. Stages,
cached corpora and job outputs record what made them; a rerun that differs
is refused with what differs named (or redone with --recompute); problems
with inputs are found before any work; errors are one line."""

import json

import pytest

from conlst_ray.commands import pseudo_label as pl_cli
from conlst_ray.commands import run as run_mod
from conlst_ray.config import load_config

pytestmark = pytest.mark.slow

SMALL = ["data.synthetic.n_source_train=240", "data.synthetic.n_unlabelled=60", "data.synthetic.n_dev=30",
         "data.synthetic.n_test=30", "data.target_langs=[near,far]", "source.epochs=1", "ssl.iterations=1",
         "resources.num_workers=0", "data.eval_during_training=false", "run_name=r"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, ray_session):
    """A run stopped after CoNL (source, pseudo-labels and CoNL finished),
    and an untouched copy of it in OUT/pristine (tests here change the run)."""
    import shutil

    out = tmp_path_factory.mktemp("prov")
    args = SMALL + [f"output_dir={out}"]
    assert run_mod.main(args + ["--stop-after", "conl"]) == 0
    shutil.copytree(out / "r", out / "pristine" / "r", symlinks=True)
    return out / "r", args


def stamps(run_dir):
    return {s: (run_dir / s / "DONE.json").stat().st_mtime_ns for s in ("source", "pseudo_labels", "conl")}


def test_resume_with_a_changed_hyperparameter_is_refused_and_config_yaml_kept(stopped_run, capsys):
    run_dir, args = stopped_run
    before = (run_dir / "config.yaml").read_bytes()
    done = stamps(run_dir)
    assert run_mod.main(args + ["--resume", "conl.gamma=0.5", "ssl.lr=0.1", "--stop-after", "conl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "conl.gamma 0.9 -> 0.5" in err and "--recompute" in err
    assert (run_dir / "config.yaml").read_bytes() == before and stamps(run_dir) == done
    # a key no finished stage depends on may change (ssl has not run yet)
    assert run_mod.main(args + ["--resume", "ssl.lr=0.0003", "--stop-after", "conl"]) == 0
    assert load_config(run_dir / "config.yaml").ssl.lr == 0.0003 and stamps(run_dir) == done


def test_recompute_redoes_the_stale_stage_and_keeps_the_others(stopped_run):
    run_dir, args = stopped_run
    done = stamps(run_dir)
    assert run_mod.main(args + ["--resume", "conl.gamma=0.5", "--recompute", "--stop-after", "conl"]) == 0
    after = stamps(run_dir)
    assert after["source"] == done["source"] and after["pseudo_labels"] == done["pseudo_labels"]
    assert after["conl"] != done["conl"]
    fingerprint = json.loads((run_dir / "conl" / "FINGERPRINT.json").read_text())
    assert fingerprint["config"]["conl.gamma"] == 0.5 == load_config(run_dir / "config.yaml").conl.gamma
    # and back: the old value is stale now
    assert run_mod.main(args + ["--resume", "--stop-after", "conl"]) == 2


def test_pseudo_labels_of_another_model_are_refused_not_returned(stopped_run, capsys):
    run_dir, args = stopped_run
    args = args + ["conl.gamma=0.5"]  # the run's current settings
    assert pl_cli.main(args + ["--model-dir", str(run_dir / "source" / "model")]) == 0
    capsys.readouterr()
    code = pl_cli.main(args + ["--model-dir", str(run_dir / "conl" / "model")])
    err = capsys.readouterr().err
    assert code == 2 and "model weights changed" in err and "--recompute" in err
    assert pl_cli.main(args + ["--model-dir", str(run_dir / "conl" / "model"), "--recompute"]) == 0
    prov = json.loads((run_dir / "pseudo_labels" / "cli" / "lang=far" / "_provenance.json").read_text())
    from conlst_ray.config.provenance import weights_stamp

    assert prov["inputs"]["model weights"] == weights_stamp(run_dir / "conl" / "model")


def test_resume_redoes_a_damaged_stage_and_only_the_stages_that_read_it(stopped_run, tmp_path, capsys):
    """CoNL's weights cut short (a full disk, a copy interrupted): --resume
    says so in one line and trains CoNL and self-training again, without
    --recompute, leaving the source stage and the pseudo-labels as they were.
    A model whose weights were deleted is named the same way."""
    import shutil

    from conlst_ray.pipeline.rundir import RunDir

    run_dir, args = stopped_run
    copy = tmp_path / "r"
    shutil.copytree(run_dir.parent / "pristine" / "r", copy, symlinks=True)
    args = [a for a in args if not a.startswith("output_dir=")] + [f"output_dir={tmp_path}", "--resume"]
    assert run_mod.main(args) == 0                                  # every stage done
    done = {s: (copy / s / "DONE.json").stat().st_mtime_ns for s in ("source", "pseudo_labels", "conl", "ssl")}
    weights = copy / "conl" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    assert run_mod.main(args) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "cut short" in line]
    assert len(said) == 1 and said[0].startswith("[conl]")
    after = {s: (copy / s / "DONE.json").stat().st_mtime_ns for s in done}
    assert after["source"] == done["source"] and after["pseudo_labels"] == done["pseudo_labels"]
    assert after["conl"] != done["conl"] and after["ssl"] != done["ssl"]
    assert RunDir(copy).damage("conl") is None and RunDir(copy).damage("ssl") is None
    (copy / "source" / "model" / "model.safetensors").unlink()
    assert RunDir(copy).damage("source") == f"{copy / 'source' / 'model'}: holds no model.safetensors"


def test_the_corpus_cache_follows_its_reading_options(tmp_path, ray_session):
    from helpers import logged

    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora

    few = load_config(None, SMALL + ["data.max_rows=5"])
    assert ingest_corpora("synthetic:unlabelled", ["near"], tmp_path, few.data)["near"]["rows"] == 5
    full = load_config(None, SMALL)
    with logged() as logs:
        manifest = ingest_corpora("synthetic:unlabelled", ["near"], tmp_path, full.data)["near"]
    assert manifest["rows"] == 60
    assert any("max_rows 5 -> None" in line and "rebuilding" in line for line in logs)


def test_an_edited_input_file_makes_finished_stages_stale(shared_data, tmp_path, ray_session, capsys):
    lines = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "dev-near.tsv"
    corpus.write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    args = SMALL + [f"output_dir={tmp_path}", "data.target_langs=[near]",
                    f"data.target_train=xnli_tsv:{tmp_path}/dev-{{lang}}.tsv"]
    assert run_mod.main(args + ["--stop-after", "conl"]) == 0
    corpus.write_text("\n".join(lines[40:80]) + "\n", encoding="utf-8")   # same size class, other rows
    capsys.readouterr()
    assert run_mod.main(args + ["--resume", "--stop-after", "conl"]) == 2
    err = capsys.readouterr().err
    assert "pseudo_labels" in err and "corpus changed" in err


def test_preflight_reports_every_bad_input_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    args = [f"output_dir={tmp_path / 'out'}", "run_name=x", "model.name_or_path=/does/not/exist",
            f"model.source_checkpoint={empty}", f"data.target_train=xnli_tsv:{tmp_path}/none-{{lang}}.tsv"]
    assert run_mod.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: model.name_or_path: /does/not/exist does not exist")
    assert f"model.source_checkpoint: {empty} holds no model" in err
    assert f"data.target_train (near): {tmp_path}/none-near.tsv: no such file" in err
    assert not (tmp_path / "out" / "x").exists()                     # nothing started, nothing written


def test_preflight_finds_a_language_the_translation_model_lacks(tmp_path, shared_data, capsys):
    from tests.helpers import tiny_translation_model

    model = tiny_translation_model(tmp_path / "mbart", "mbart50")
    args = [f"output_dir={tmp_path / 'out'}", "run_name=x", f"translation.model={model}",
            "data.target_langs=[fr,bg]", f"data.target_train=xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv",
            "data.target_dev=null", "data.target_test=null"]
    assert run_mod.main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # (after transformers' progress bar of the model save)
    assert err.startswith("error: translation.model: ") and "['bg'] not covered by mbart50" in err
    assert not (tmp_path / "out" / "x").exists()


def test_skipped_rows_are_counted_per_file_when_a_corpus_is_cached(shared_data, tmp_path, ray_session):
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora

    lines = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").splitlines()[:50]
    lines[9], lines[19] = "p\th\tmaybe", "only one column"
    (tmp_path / "dev-fr.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(None, ["data.on_malformed=skip"])
    from helpers import logged

    with logged() as logs:
        manifest = ingest_corpora(f"xnli_tsv:{tmp_path}/dev-{{lang}}.tsv", ["fr"], tmp_path / "cache", cfg.data)["fr"]
    assert manifest["rows"] == 48 and manifest["skipped_malformed"] == 2
    said = next(line for line in logs if "malformed rows skipped" in line)
    assert f"{tmp_path}/dev-fr.tsv: 48 rows, 2 malformed rows skipped" in said
    assert f"first: {tmp_path}/dev-fr.tsv:10: unknown label 'maybe'" in said and ":20: expected 3" in said
