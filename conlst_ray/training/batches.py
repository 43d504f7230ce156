"""Tokenised rows -> padded batches on a device, prepared ahead of the step."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from conlst_ray.data.schema import pair_texts


@dataclass
class Encoded:
    """A tokenised corpus: unpadded token id lists plus the row columns kept."""
    input_ids: list
    token_type_ids: Optional[list]
    labels: np.ndarray
    ids: list
    langs: list

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))


def encode_table(tokenizer, table: pa.Table, max_length: int) -> Encoded:
    """Tokenise texts or text pairs, truncated to ``max_length``, unpadded
    (padding happens per batch: see ``collate``)."""
    enc = tokenizer(*pair_texts(table), truncation=True, max_length=max_length, padding=False)
    return Encoded(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"),
                   labels=np.asarray(table.column("label").to_pylist(), dtype=np.int64),
                   ids=table.column("id").to_pylist(), langs=table.column("lang").to_pylist())


def collate(input_ids: Sequence[Sequence[int]], token_type_ids: Optional[Sequence[Sequence[int]]],
            pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest pair (dynamic padding). One vectorised
    scatter, not a copy per row: 256 rows take 0.16 ms instead of 5 ms here,
    which on a GPU was half of an e5-small forward pass."""
    lengths = np.fromiter((len(x) for x in input_ids), np.int64, len(input_ids))
    ids, mask = padded(np.concatenate([np.asarray(r) for r in input_ids]), lengths, pad_id)
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if token_type_ids is not None:
        types, _ = padded(np.concatenate([np.asarray(r) for r in token_type_ids]), lengths, 0)
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


def padded(flat: np.ndarray, lengths: np.ndarray, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``lengths`` (their values concatenated in ``flat``) left-aligned
    in a (rows, longest) int64 array, ``fill`` elsewhere; and the mask of
    the real tokens (its True cells in row-major order are ``flat``)."""
    mask = np.arange(int(lengths.max()))[None, :] < lengths[:, None]
    out = np.full(mask.shape, fill, dtype=np.int64)
    out[mask] = flat
    return out, mask


def batch_of(data: Encoded, index: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows ``index`` padded; with their cached frozen-layer states when the
    rows carry them (``data.frozen``, model.cache_frozen)."""
    types = [data.token_type_ids[i] for i in index] if data.token_type_ids is not None else None
    batch = collate([data.input_ids[i] for i in index], types, pad_id)
    frozen = getattr(data, "frozen", None)
    if frozen is not None:
        batch["frozen_hidden"] = frozen.padded(index, batch["input_ids"].shape[1])
    return batch


def to_device(batch: dict, device) -> dict:
    """Tensors of ``batch`` on ``device``; towards a GPU through pinned
    memory, so the copy runs asynchronously (it is made ahead of the step,
    see ``prefetch``)."""
    pin = torch.device(device).type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable, depth: int) -> Iterator:
    """Yield ``items`` while a background thread prepares the next ``depth``
    of them (batches padded, pinned and sent to the device while the current
    step computes). Items are produced in order by one thread, so seeded
    draws give the same batches as without it. ``depth`` 0: no thread."""
    if depth <= 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as error:  # re-raised in the consumer, where it can be handled
            ready.put(_Raised(error))

    thread = threading.Thread(target=produce, daemon=True, name="conlst-prefetch")
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of similar length (length bucketing): short pairs are not padded
    to the longest pair of the corpus."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]
