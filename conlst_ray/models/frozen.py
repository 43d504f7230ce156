"""Frozen lower layers computed once per row (``model.cache_frozen``).

Under ``model.freeze_layers = N`` the embedding block and the lower N
transformer layers never change, and run without dropout (eval mode) their
output for a row is a fixed tensor. So it is computed once per row, kept in a
file beside the token files, and every later forward pass -- each training
step of every stage, every scoring -- runs only the upper layers from it. On
a CPU that is most of a step's work: with e5-small's lower 6 of 12 layers
frozen, a training step's forward pass shrinks by half, inference by half.

Rows whose tokens a view changes (token masking, a back-translation) are
marked *stale* in their batch and their lower part runs again in the step
(no gradient: it is frozen).

The cache is keyed like every other cache: by the frozen weights (a hash
of the embedding block and the lower N layers), N, the storage precision
and the token file it was made from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

CACHE_VERSION = 1


# -- the two halves of the encoder -----------------------------------------------------------

def _parts(encoder: nn.Module, n: int) -> tuple[nn.Module, nn.ModuleList]:
    """The embedding block and the transformer layers of a BERT-family encoder
    (BERT, XLM-R, e5): the modules the frozen part is made of."""
    embeddings = getattr(encoder, "embeddings", None)
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if embeddings is None or not isinstance(layers, nn.ModuleList):
        raise ValueError(f"model.cache_frozen needs a BERT-family encoder (embeddings + encoder.layer); "
                         f"{type(encoder).__name__} is not one: set model.cache_frozen=false")
    if not 1 <= n <= len(layers):
        raise ValueError(f"model.cache_frozen needs 1 <= model.freeze_layers <= {len(layers)}, got {n}")
    return embeddings, layers


def frozen_modules(encoder: nn.Module, n: int) -> list[nn.Module]:
    embeddings, layers = _parts(encoder, n)
    return [embeddings, *layers[:n]]


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]):
    """The frozen part runs without dropout, whatever mode the model is in."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _mask(encoder: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor):
    """The attention mask as the encoder's own layers expect it."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)


def run_lower(encoder: nn.Module, n: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The hidden states after the embedding block and the lower ``n`` layers
    (eval mode, no gradient): what the cache holds for a row."""
    embeddings, layers = _parts(encoder, n)
    with torch.no_grad(), _eval_mode([embeddings, *layers[:n]]):
        hidden = embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = _mask(encoder, hidden, attention_mask)
        for layer in layers[:n]:
            hidden = layer(hidden, mask)
    return hidden


def run_upper(encoder: nn.Module, n: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last hidden state from the states after layer ``n`` (the trained part)."""
    _, layers = _parts(encoder, n)
    mask = _mask(encoder, hidden, attention_mask)
    for layer in layers[n:]:
        hidden = layer(hidden, mask)
    return hidden


# -- the per-row states ----------------------------------------------------------------------

class FrozenStates:
    """Every row's states after the frozen part, unpadded: ``flat`` holds the
    rows' token vectors one after another (row i at offsets[i]:offsets[i+1])."""

    def __init__(self, flat: torch.Tensor, offsets: np.ndarray):
        self.flat, self.offsets = flat, np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def padded(self, index: Sequence[int], width: int, keep: Optional[np.ndarray] = None) -> torch.Tensor:
        """[len(index), width, hidden] states of rows ``index``, zero after
        each row's end; rows where ``keep`` is False stay zero (stale rows,
        recomputed in the step)."""
        index = np.asarray(index, dtype=np.int64)
        keep = np.ones(len(index), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
        starts, lengths = self.offsets[index], self.offsets[index + 1] - self.offsets[index]
        lengths = np.where(keep, lengths, 0)
        out = torch.zeros((len(index), width, self.flat.shape[1]), dtype=self.flat.dtype)
        if lengths.sum():
            where = np.arange(width)[None, :] < lengths[:, None]
            # the flat positions of every kept token, in row-major order of ``where``
            positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
            out[torch.from_numpy(where)] = self.flat[torch.from_numpy(positions)]
        return out


def storage_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32


def frozen_stamp(encoder: nn.Module, n: int, precision: str) -> str:
    """What the states depend on besides the rows: the frozen weights, n and
    the storage precision."""
    h = hashlib.sha256(f"v{CACHE_VERSION} n={n} {storage_dtype(precision)}".encode())
    for module in frozen_modules(encoder, n):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def compute_states(model, rows, n: int, device, precision: str, batch_size: int = 64) -> FrozenStates:
    """The states of every row of ``rows`` (TokenRows or Encoded), computed
    over length-sorted batches."""
    from conlst_ray.training.batches import batch_of, length_sorted_batches, to_device
    from conlst_ray.training.inference import autocast

    lengths = rows.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = torch.zeros((int(offsets[-1]), model.encoder.config.hidden_size), dtype=storage_dtype(precision))
    pad_id = 0  # padded positions are masked and never stored
    for index in length_sorted_batches(lengths, batch_size):
        batch = to_device(batch_of(rows, index, pad_id), device)
        with autocast(device, precision):
            hidden = run_lower(model.encoder, n, batch["input_ids"], batch["attention_mask"],
                               batch.get("token_type_ids"))
        real = batch["attention_mask"].bool().cpu()
        vectors = hidden.float().cpu()[real].to(flat.dtype)
        positions = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in index])
        flat[torch.from_numpy(positions)] = vectors
    return FrozenStates(flat, offsets)


def cached_states(model, rows, n: int, folder: Path, device, precision: str, batch_size: int = 64,
                  langs: Sequence[str] = (), log=print) -> FrozenStates:
    """The states of ``rows`` from ``folder`` (the token folder the rows were
    read from, which keys them), computed and written there first if absent.
    The file is written under a temporary name and renamed when complete."""
    stamp = frozen_stamp(model.encoder, n, precision)
    offsets = np.concatenate([[0], np.cumsum(rows.lengths())])
    which = hashlib.sha256(f"{list(langs)} {len(rows)} {int(offsets[-1])}".encode()).hexdigest()[:8]
    path = Path(folder) / f"frozen-{stamp}-{which}.bin"
    meta_path = path.with_suffix(".json")
    dtype = storage_dtype(precision)
    hidden = model.encoder.config.hidden_size
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("tokens") == int(offsets[-1]):
            return FrozenStates(_map(path, dtype, hidden), offsets)
    import time

    t0 = time.time()
    states = compute_states(model, rows, n, device, precision, batch_size)
    raw = states.flat.view(torch.int16) if dtype == torch.bfloat16 else states.flat
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw.numpy().tofile(tmp)
    tmp.replace(path)
    meta_path.write_text(json.dumps({"tokens": int(offsets[-1]), "rows": len(rows), "layers": n,
                                     "dtype": str(dtype), "hidden": hidden}))
    log(f"[frozen] states of {len(rows)} rows after the lower {n} layers: {time.time() - t0:.0f} s -> {path.name}")
    return FrozenStates(_map(path, dtype, hidden), offsets)


def _map(path: Path, dtype: torch.dtype, hidden: int) -> torch.Tensor:
    """The file read back as a [tokens, hidden] tensor."""
    raw = np.fromfile(path, dtype=np.int16 if dtype == torch.bfloat16 else np.float32)
    t = torch.from_numpy(raw.reshape(-1, hidden))
    return t.view(dtype) if dtype == torch.bfloat16 else t
