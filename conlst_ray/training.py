"""Plain-PyTorch training and inference helpers shared by every stage.

No Ray here: the Ray Train loops and Ray Data actors call these functions.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from conlst_ray.data.schema import pair_texts

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def autocast(device, precision: str = "auto"):
    """The numeric context of a forward pass: bf16 autocast on CUDA under
    ``auto`` or ``bf16`` (with TF32 for what stays fp32), nothing on CPU under
    ``auto``/``fp32``. The losses cast logits to fp32 themselves."""
    kind = torch.device(device).type
    if precision == "fp32" or (precision == "auto" and kind != "cuda"):
        return contextlib.nullcontext()
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


def default_device() -> str:
    """Where a driver-side helper (report, evaluate) runs a model: its GPU
    when it has one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Pad a batch to its own longest pair (dynamic padding)."""
    width = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    types = torch.zeros((len(input_ids), width), dtype=torch.long) if token_type_ids is not None else None
    for i, row in enumerate(input_ids):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        if types is not None:
            types[i, : len(row)] = torch.as_tensor(token_type_ids[i], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def batch_of(data: Encoded, index: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    types = [data.token_type_ids[i] for i in index] if data.token_type_ids is not None else None
    return collate([data.input_ids[i] for i in index], types, pad_id)


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


def linear_warmup_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0):
    """AdamW without decay on biases and LayerNorm weights (BERT practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def predict_proba(model, data: Encoded, pad_id: int, batch_size: int = 256, device="cpu",
                  precision: str = "auto", index: Optional[np.ndarray] = None) -> np.ndarray:
    """Class distribution q of every row (or of rows ``index``, in that
    order; model in eval mode: no dropout), computed over length-sorted
    batches. The model is put on ``device`` outside inference mode:
    parameters moved inside it would become inference tensors that a later
    training step cannot use."""
    model.to(device).eval()
    rows = np.arange(len(data)) if index is None else np.asarray(index)
    out = np.zeros((len(rows), model.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for local in length_sorted_batches(data.lengths()[rows], batch_size):
            batch = to_device(batch_of(data, rows[local], pad_id), device)
            with autocast(device, precision):
                logits = model(**batch)
            out[local] = logits.float().softmax(-1).cpu().numpy()
    return out


def accuracy_by_language(q: np.ndarray, data: Encoded) -> dict[str, float]:
    """Accuracy per language over rows with a known label."""
    from conlst_ray.algorithm.negatives import unique_in_order

    pred = q.argmax(-1)
    langs = np.asarray(data.langs)
    out = {}
    for lang in unique_in_order(langs):
        sel = (langs == lang) & (data.labels >= 0)
        if sel.any():
            out[lang] = float((pred[sel] == data.labels[sel]).mean())
    return out


def accuracy_on(model, tokenizer, table: pa.Table, max_length: int, batch_size: int = 256, device="cpu",
                precision: str = "auto") -> dict:
    """Accuracy per language of ``model`` on the labelled rows of ``table``."""
    data = encode_table(tokenizer, table, max_length)
    return accuracy_by_language(predict_proba(model, data, tokenizer.pad_token_id, batch_size, device, precision),
                                data)
