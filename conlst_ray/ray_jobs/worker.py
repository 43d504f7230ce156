"""What every Ray Train loop of conlst_ray shares on a worker: the process
group (rank, all-reduce, all-gather), the global batch plan every worker
slices the same way, the module DDP wraps, checkpoints, fault injection for
the recovery tests, and the per-step records of steps.jsonl."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from conlst_ray.model import ConlstEncoder
from conlst_ray.training import autocast

STATE_FILE = "train_state.pt"


# -- distributed helpers ------------------------------------------------------------------

def world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_mean(value: float) -> float:
    rank, size = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item() / size)


def all_gather_rows(index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (index, values) of every worker (gloo: equal-size tensors,
    so each pads to the longest)."""
    rank, size = world()
    if size == 1:
        return index, values
    n = torch.tensor([len(index)])
    sizes = [torch.zeros_like(n) for _ in range(size)]
    torch.distributed.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    idx = torch.full((width,), -1, dtype=torch.long)
    idx[: len(index)] = torch.as_tensor(index)
    val = torch.zeros((width,) + values.shape[1:], dtype=torch.float32)
    val[: len(index)] = torch.as_tensor(values)
    idxs = [torch.zeros_like(idx) for _ in range(size)]
    vals = [torch.zeros_like(val) for _ in range(size)]
    torch.distributed.all_gather(idxs, idx)
    torch.distributed.all_gather(vals, val)
    out_i = torch.cat([i[: int(s.item())] for i, s in zip(idxs, sizes)]).numpy()
    out_v = torch.cat([v[: int(s.item())] for v, s in zip(vals, sizes)]).numpy()
    return out_i, out_v


def global_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Full global batches of a seeded permutation (the last partial batch is
    dropped so every worker runs the same number of steps)."""
    if n < batch_size:
        raise ValueError(f"only {n} rows for a global batch of {batch_size}: lower the batch size")
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def my_slice(batch: np.ndarray) -> np.ndarray:
    rank, size = world()
    if len(batch) % size:
        raise ValueError(f"global batch {len(batch)} is not divisible by {size} workers")
    return batch[rank::size]


class StepModule(nn.Module):
    """Runs one algorithm step in ``forward`` so DDP can wrap it, under the
    configured precision (``resources.precision``)."""

    def __init__(self, model: ConlstEncoder, precision: str = "auto"):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, step_fn, *args):
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            return step_fn(self.model, *args)


# -- checkpoints ---------------------------------------------------------------------------

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


def maybe_fail(loop_cfg: dict, step: int) -> None:
    """Fault injection for recovery tests: one worker dies once at a step."""
    fail = loop_cfg.get("inject_failure")
    if not fail or step != fail["step"]:
        return
    rank, size = world()
    marker = Path(fail["marker"])
    if rank == size - 1 and not marker.exists():
        # Ray Train's controller collects reported checkpoints on its health
        # poll (every 2 s): a worker that dies sooner after a report loses that
        # checkpoint and the group restarts from the one before. A real failure
        # can hit that window; the test waits it out to check the restore itself.
        time.sleep(float(fail.get("after_s", 0.0)))
        marker.write_text("failed once")
        os._exit(1)


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def micro_batches(rows: np.ndarray, parts: int, key: str) -> list[np.ndarray]:
    """A worker's rows of one step in ``parts`` micro-batches (gradient accumulation)."""
    if parts > len(rows):
        raise ValueError(f"{key}={parts} is more micro-batches than the {len(rows)} rows a worker has per step")
    return np.array_split(rows, parts)


def accumulated_step(ddp, model, parts: list, optimizer, scheduler, max_norm: float = 1.0) -> dict:
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
        with contextlib.nullcontext() if last or not hasattr(ddp, "no_sync") else ddp.no_sync():
            loss, logs = ddp(step_fn, *args)
            (loss * weight).backward()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + weight * v
            weights[k] = weights.get(k, 0.0) + weight
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return {k: v / weights[k] for k, v in sums.items()}


def record_step(sums: dict, metrics_path, logs: dict, **tags) -> None:
    """Average a step's log terms over the workers, keep them for the epoch
    means, and (rank 0) append them to steps.jsonl with a timestamp."""
    record = {k: all_mean(v) for k, v in logs.items()}
    for k, v in record.items():
        sums.setdefault(k, []).append(v)
    if metrics_path is not None:
        append_jsonl(metrics_path.with_name("steps.jsonl"), {**tags, **record, "time": time.time()})


def drop_replayed_records(metrics_path, step: int, epoch: int) -> None:
    """On (re)start, keep only the records the restored checkpoint covers:
    steps up to ``step`` and epochs before ``epoch``. The steps after the
    checkpoint run again and would otherwise be logged twice."""
    from conlst_ray.config import atomic_write_text

    for path, keep in ((metrics_path.with_name("steps.jsonl"), lambda r: r.get("step", 0) <= step),
                       (metrics_path, lambda r: r.get("epoch", -1) < epoch)):
        if not path.is_file():
            continue
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if keep(json.loads(line))]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def epoch_means(sums: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in sums.items()}
