"""What a run directory may contain is data, not code; and the
checks that keep a run directory describing its own results."""

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.thresholds import FlexMatchThresholds
from conlst_ray.training.loop import rng_state, set_rng_state
from conlst_ray.training.optim import linear_warmup_schedule, make_optimizer


def through_a_checkpoint(state, tmp_path, monkeypatch):
    """Save ``state`` as a Ray Train checkpoint and restore it with the
    worker's own ``load_checkpoint``."""
    import ray.train

    from conlst_ray.ray_jobs import worker

    torch.save(state, tmp_path / worker.STATE_FILE)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(str(tmp_path)))
    return worker.load_checkpoint()


def test_a_training_checkpoint_loads_with_weights_only_and_restores_the_rngs(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 3)
    opt = make_optimizer(model, 1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = linear_warmup_schedule(opt, 10, 0.1)
    fm = FlexMatchThresholds(5, 3, 0.9)
    fm.update([0, 1], [2, 2], [True, True])
    np.random.seed(3)
    torch.manual_seed(3)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": rng_state(), "step": 7, "epoch": 1, "thresholds": fm.state_dict()}
    expected = (np.random.rand(3), torch.rand(3))
    back = through_a_checkpoint(state, tmp_path, monkeypatch)
    set_rng_state(back["rng"])
    assert np.array_equal(np.random.rand(3), expected[0]) and torch.equal(torch.rand(3), expected[1])
    FlexMatchThresholds(5, 3, 0.9).load_state_dict(back["thresholds"])
    assert back["step"] == 7


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    import pytest

    ran = []

    class Payload:
        def __reduce__(self):
            return (ran.append, ("code ran",))

    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        through_a_checkpoint({"model": {}, "rng": Payload()}, tmp_path, monkeypatch)
    assert ran == []


# -- how a command ends -------------------------------------------------------------------------

def test_a_user_error_inside_a_ray_task_is_one_line_with_the_traceback_kept(ray_session, capsys):
    import ray

    from conlst_ray.commands.common import ERROR_LOG, guarded
    from conlst_ray.data.schema import CorpusError

    @ray.remote(num_cpus=0.01)
    def read():
        raise CorpusError("corpus.tsv:17: unknown label 'maybe'")

    def main(argv):
        ray.get(read.remote())

    assert guarded(main, []) == 2
    assert capsys.readouterr().err == "error: corpus.tsv:17: unknown label 'maybe'\n"
    assert "Traceback" in ERROR_LOG.read_text()
    import pytest

    with pytest.raises(CorpusError):  # --debug: the whole story
        guarded(main, ["--debug"])


def test_a_program_error_is_not_dressed_as_a_user_error():
    import pytest

    from conlst_ray.commands.common import guarded

    def main(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        guarded(main, [])


def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(tmp_path, capsys):
    from conlst_ray.pipeline.errors import RunInterrupted
    from conlst_ray.pipeline.rundir import RunDir
    from conlst_ray.reporting.library import where_it_stopped

    run = RunDir(tmp_path / "r")
    for stage in ("source", "pseudo_labels"):
        (run.root / stage).mkdir(parents=True)
    (run.root / "source" / "DONE.json").write_text("{}")
    argv = ["output_dir=/x", "conl.gamma=0.8"]
    from conlst_ray.commands.common import guarded

    def main(argv):  # the library says where its run stopped
        raise RunInterrupted(where_it_stopped(run, argv, None))

    assert guarded(main, argv) == 130
    err = capsys.readouterr().err
    assert f"run {run.root} stopped in stage pseudo_labels" in err
    assert "continue with: python -m conlst_ray.run output_dir=/x conl.gamma=0.8 --resume run_name=r" in err


@pytest.mark.slow
def test_a_user_error_in_a_training_worker_is_shown_first(shared_data, tmp_path, ray_session, capsys):
    """A corpus error raised inside a Ray Train worker (2 workers) reaches
    the command line as its own one line, file and line named."""
    from conlst_ray.commands.common import guarded
    from conlst_ray.config import load_config
    from conlst_ray.models.encoder import build_model, build_tokenizer
    from conlst_ray.pipeline.rundir import stage_files
    from conlst_ray.ray_jobs.train import fit_stage

    lines = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").splitlines()[:30]
    lines[11] = "premise\thypothesis\tmaybe"
    (tmp_path / "train-src.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(None, [f"data.source_train=xnli_tsv:{tmp_path}/train-{{lang}}.tsv", "source.epochs=1",
                             "resources.cpus_per_worker=0.5", "data.eval_during_training=false",
                             "resources.max_failures=0"])
    tok = build_tokenizer(cfg.model, cfg.data)
    init = str(build_model(cfg.model, tok).save(tmp_path / "init", tok))
    files = stage_files(tmp_path / "source")
    assert guarded(lambda argv: fit_stage("source", cfg, files, init, num_workers=2), []) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # (after transformers' progress bars)
    assert last.startswith(f"error: {tmp_path}/train-src.tsv:12: unknown label 'maybe' (expected one of")


def test_the_error_log_is_the_users_own_and_never_masks_the_error(tmp_path, monkeypatch, capsys):
    """The full traceback of a user error goes to a per-user file readable by
    its owner only (it may quote paths and settings); where that file cannot
    be written, the user still gets the one line, not a second traceback."""
    import stat
    import tempfile

    from conlst_ray.commands import common
    from conlst_ray.data.schema import CorpusError

    def main(argv):
        raise CorpusError("corpus.tsv:3: unknown label 'maybe'")

    assert not str(common.ERROR_LOG).startswith(tempfile.gettempdir())  # not one file shared by every user
    log = tmp_path / "state" / "conlst_ray" / "last-error.log"
    log.parent.mkdir(parents=True)
    log.write_text("an older error")
    log.chmod(0o644)
    monkeypatch.setattr(common, "ERROR_LOG", log)
    assert common.guarded(main, []) == 2
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and "unknown label" in log.read_text()
    capsys.readouterr()
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(common, "ERROR_LOG", tmp_path / "a_file" / "last-error.log")  # cannot be created
    assert common.guarded(main, []) == 2
    assert capsys.readouterr().err == "error: corpus.tsv:3: unknown label 'maybe'\n"
