"""The step loop, written once: every stage's algorithm object (the shape of
USB's AlgorithmBase, see ``algorithm/base.py``) runs through ``fit``, under
Ray Train on each worker and in the plain loops of tests and benchmarks.

Per epoch: ``begin_epoch`` (pools, pseudo-labels, thresholds), then its
``batches`` prepared ahead by a background thread (``prefetch``), one
``train_step`` per batch (an optimizer step over micro-batches), one record
per step in steps.jsonl, and ``end_epoch``'s logs with the epoch means.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from conlst_ray.training.batches import prefetch
from conlst_ray.training.distributed import all_mean
from conlst_ray.training.inference import autocast


class StepModule(nn.Module):
    """Runs one algorithm step in ``forward`` so DDP can wrap it, under the
    configured precision (``resources.precision``). Unwrapped, it is the
    plain loop's runner."""

    def __init__(self, model: nn.Module, precision: str = "auto"):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, step_fn, *args):
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            return step_fn(self.model, *args)


def accumulated_step(runner, model, parts: list, optimizer, scheduler, max_norm: float = 1.0) -> dict:
    """One optimizer step over micro-batches ``parts`` = [(step_fn, args,
    weight)], weight = the part's share of the worker's rows: the summed
    gradient is the whole batch's (a part's loss is a mean over its rows).
    DDP all-reduces on the last part only. Returns the logs, weighted alike
    (a term some parts lack is averaged over the parts that have it)."""
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for j, (step_fn, args, weight) in enumerate(parts):
        last = j == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(runner, "no_sync") else runner.no_sync():
            loss, logs = runner(step_fn, *args)
            (loss * weight).backward()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + weight * v
            weights[k] = weights.get(k, 0.0) + weight
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return {k: v / weights[k] for k, v in sums.items()}


def fit(algorithm, runner, *, start_epoch: int = 0, step: int = 0, prefetch_depth: int = 2,
        steps_file: Optional[Path] = None,
        before_step: Optional[Callable[[int], None]] = None) -> Iterator[tuple[int, int, dict]]:
    """Run ``algorithm`` from ``start_epoch`` (optimizer step ``step``) to its
    last epoch; yields (epoch, step, epoch logs) after each epoch, where the
    caller checkpoints. ``runner`` calls a step function on the model: the
    DDP-wrapped ``StepModule`` under Ray Train, a bare one in a plain loop.
    ``steps_file``: where the per-step records go (rank 0 only).
    ``before_step``: a test's seam (fault injection); production passes none."""
    for epoch in range(start_epoch, algorithm.epochs):
        algorithm.begin_epoch(epoch)
        total = algorithm.epoch_steps(epoch)
        sums: dict[str, list] = {}
        for parts in prefetch(algorithm.batches(epoch, step), prefetch_depth):
            if before_step is not None:
                before_step(step)
            logs = algorithm.train_step(runner, parts)
            step += 1
            record_step(sums, steps_file, logs, stage=algorithm.name, **{algorithm.epoch_key: epoch}, step=step,
                        epoch_steps=total)
        yield epoch, step, {**epoch_means(sums), **algorithm.end_epoch(epoch)}


def record_step(sums: dict, steps_file: Optional[Path], logs: dict, **tags) -> None:
    """Average a step's log terms over the workers, keep them for the epoch
    means, and append them to ``steps_file`` with a timestamp."""
    record = {k: all_mean(v) for k, v in logs.items()}
    for k, v in record.items():
        sums.setdefault(k, []).append(v)
    if steps_file is not None:
        append_jsonl(steps_file, {**tags, **record, "time": time.time()})


def epoch_means(sums: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in sums.items()}


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def rng_state() -> dict:
    """RNG states as tensors and plain numbers, so that the checkpoint loads
    with ``weights_only=True`` (numpy's state tuple holds an ndarray)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
