"""Data parallelism in plain torch.distributed (the process group Ray Train
sets up, or none: one process): rank, all-reduce, all-gather, and the global
batch plan every worker slices the same way."""

from __future__ import annotations

import numpy as np
import torch


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


BUCKET_WINDOW = 50  # batches whose rows are sorted by length together


def global_plan(n: int, batch_size: int, seed: int, epoch: int,
                lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Full global batches of a seeded permutation (the last partial batch is
    dropped so every worker runs the same number of steps). With ``lengths``
    (resources.length_buckets): the permutation's rows are sorted by length
    within windows of BUCKET_WINDOW batches, cut into batches, and the
    batches shuffled -- each batch pads to a similar length, and which rows
    meet in a batch stays random within a window."""
    if n < batch_size:
        raise ValueError(f"only {n} rows for a global batch of {batch_size}: lower the batch size")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    usable = order[: n - n % batch_size]
    if lengths is None:
        return [usable[i:i + batch_size] for i in range(0, len(usable), batch_size)]
    width = BUCKET_WINDOW * batch_size
    batches = []
    for start in range(0, len(usable), width):
        window = usable[start:start + width]
        window = window[np.argsort(np.asarray(lengths)[window], kind="stable")]
        batches += [window[i:i + batch_size] for i in range(0, len(window), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def my_slice(batch: np.ndarray) -> np.ndarray:
    rank, size = world()
    if len(batch) % size:
        raise ValueError(f"global batch {len(batch)} is not divisible by {size} workers")
    return batch[rank::size]


def micro_batches(rows: np.ndarray, parts: int, key: str) -> list[np.ndarray]:
    """A worker's rows of one step in ``parts`` micro-batches (gradient accumulation)."""
    if parts > len(rows):
        raise ValueError(f"{key}={parts} is more micro-batches than the {len(rows)} rows a worker has per step")
    return np.array_split(rows, parts)
