"""What a Ray Train worker adds to the stage body (``stage_run.run_stage``):
its device, DDP around the model, checkpoints reported to Ray Train and
restored from it."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from conlst_ray.training.distributed import world

__all__ = ["RayTrainSession", "DriverWatch", "STATE_FILE", "load_checkpoint", "save_checkpoint"]

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


@dataclass
class DriverWatch:
    """Before a step (at most every ``every_s`` seconds): does the command
    that started this worker still hold its run directory's lock? A driver
    killed with kill -9 leaves its workers training until Ray notices (4 s
    here, longer on a loaded cluster), and a prompt --resume takes the lock
    over: the orphan then stops at once, before it writes another step or
    checkpoint (os._exit: the dead driver's Ray Train cannot restart it)."""
    lock: str                    # RUN/.lock
    holder: dict                 # what the driver wrote there
    every_s: float = 1.0
    checked: float = field(default=0.0)

    def __call__(self, step: int) -> None:
        from conlst_ray.storage.lock import lock_lost

        now = time.monotonic()
        if now - self.checked < self.every_s:
            return
        self.checked = now
        why = lock_lost(Path(self.lock), self.holder)
        if why:
            print(f"[worker] stopping before step {step}: {why}", file=sys.stderr, flush=True)
            os._exit(3)


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
