"""What a Ray Train worker adds to the plain loop: checkpoints reported to
Ray Train and restored from it, and the records a restart must not repeat."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import torch

from conlst_ray.data import storage
from conlst_ray.data.files import atomic_write_text
from conlst_ray.training.distributed import world

STATE_FILE = "train_state.pt"


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


def drop_replayed_records(metrics_path: Path, step: int, epoch: int) -> None:
    """On (re)start, keep only the records the restored checkpoint covers:
    steps up to ``step`` and epochs before ``epoch``. The steps after the
    checkpoint run again and would otherwise be logged twice. A line cut
    short (a log uploaded to object storage while it was being written, then
    the worker died) is dropped too."""
    for path, keep in ((metrics_path.with_name("steps.jsonl"), lambda r: r.get("step", 0) <= step),
                       (metrics_path, lambda r: r.get("epoch", -1) < epoch)):
        if not path.is_file():
            continue
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if _whole(line) and keep(json.loads(line))]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def _whole(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def write_thresholds(folder: Path, epoch: int, thresholds: list) -> None:
    """Every worker writes the thresholds it applied (they must agree)."""
    rank, _ = world()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"iter{epoch}.rank{rank}.json").write_text(json.dumps(thresholds))
    storage.publish(folder / f"iter{epoch}.rank{rank}.json")
