"""What a Ray Train worker adds to the stage body (``stage_run.run_stage``):
its device, DDP around the model, checkpoints reported to Ray Train and
restored from it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch

from conlst_ray.training.distributed import world

__all__ = ["RayTrainSession", "STATE_FILE", "load_checkpoint", "save_checkpoint"]

STATE_FILE = "train_state.pt"  # in each checkpoint Ray Train keeps


class RayTrainSession:
    """The session of a stage under Ray Train (V2)."""

    def __init__(self):
        import ray.train.torch

        self.device = ray.train.torch.get_device()

    def wrap(self, step_module):
        import ray.train.torch

        return ray.train.torch.prepare_model(step_module, parallel_strategy_kwargs={"find_unused_parameters": True})

    def restore(self) -> Optional[dict]:
        return load_checkpoint()

    def report(self, state: dict, record: dict) -> None:
        save_checkpoint(state, record)


def save_checkpoint(state: dict, metrics: dict) -> None:
    """Report metrics from every worker; rank 0 attaches the checkpoint."""
    import ray.train

    rank, _ = world()
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def load_checkpoint() -> Optional[dict]:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        # weights_only: a checkpoint is data, never code, whoever wrote the run directory
        return torch.load(Path(d) / STATE_FILE, weights_only=True)
