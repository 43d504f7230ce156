"""The command lines: --help for each, pseudo-labelling a run's target corpora,
and translation's start-up checks."""

import subprocess
import sys

import pytest

from conlst_ray.commands import pseudo_label as pl_cli
from conlst_ray.commands import translate as tr_cli
from conlst_ray.ray_jobs.pseudo_label import read_pseudo_labels
from tests.helpers import tiny_translation_model


@pytest.mark.parametrize("module,expected", [("run", "conl.gamma=0.9"), ("pseudo_label", "conl.gamma=0.9"),
                                             ("translate", "conl.gamma=0.9"), ("tune", "conl.gamma=0.9"),
                                             ("report", "--ablation NAME=RUN_DIR")])
def test_every_entry_point_has_help(module, expected):
    proc = subprocess.run([sys.executable, "-m", f"conlst_ray.{module}", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and expected in proc.stdout


@pytest.mark.slow
def test_pseudo_label_cli_labels_every_target_row_of_a_run(tmp_path, ray_session, capsys):
    from conlst_ray.config import load_config
    from conlst_ray.pipeline.rundir import RunDir
    from conlst_ray.pipeline.stages import stage_source

    args = [f"output_dir={tmp_path}", "run_name=r", "source.epochs=1", "data.synthetic.n_unlabelled=100",
            "data.synthetic.n_source_train=240", "data.synthetic.n_dev=30", "data.synthetic.n_test=30",
            "data.eval_during_training=false", "resources.num_workers=0"]
    assert pl_cli.main(args) == 2                       # no model yet: a clear error
    assert "run python -m conlst_ray.run first" in capsys.readouterr().err
    cfg = load_config(None, args)
    stage_source(cfg, RunDir.create(cfg))   # what `run` does first
    assert pl_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| far | 100 |" in out
    table = read_pseudo_labels(tmp_path / "r" / "pseudo_labels" / "cli")
    assert table.num_rows == 4 * 100 and len(set(table.column("id").to_pylist())) == 4 * 100


def test_translate_cli_rejects_an_uncovered_language_before_any_work(tmp_path, shared_data, capsys):
    model = tiny_translation_model(tmp_path / "mbart", "mbart50")
    args = [f"output_dir={tmp_path}", "run_name=t", f"translation.model={model}", "data.target_langs=[fr,bg]",
            f"data.target_train=xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"]
    assert tr_cli.main(args) == 2
    assert "['bg'] not covered by mbart50" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert tr_cli.main(["translation.model=/nowhere/model"]) == 2
    assert "translation.model: cannot load" in capsys.readouterr().err


def test_overrides_may_come_before_and_after_flags():
    from conlst_ray.commands.common import parse
    from conlst_ray.commands.run import build_parser

    args, cfg = parse(build_parser(), ["seed=3", "--resume", "conl.gamma=0.8"])
    assert args.resume and cfg.seed == 3 and cfg.conl.gamma == 0.8
