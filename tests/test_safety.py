"""Issue 16: what a run directory may contain is data, not code; and the
checks that keep a run directory describing its own results."""

import numpy as np
import torch

from conlst_ray.algorithm.thresholds import FlexMatchThresholds
from conlst_ray.ray_jobs.worker import rng_state, set_rng_state
from conlst_ray.training import linear_warmup_schedule, make_optimizer


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
