"""The frozen-layer states of a corpus's rows (``model.cache_frozen``),
computed once and kept in a file beside its token files.

The cache is keyed like every other cache: by the frozen weights (a hash
of the embedding block and the lower N layers), N, the storage precision
and the token file it was made from (the folder and the rows read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from conlst_ray.models.frozen import FrozenStates, frozen_modules, run_lower
from conlst_ray.storage import integrity
from conlst_ray.storage.files import write_via_temporary
from conlst_ray.training.batches import batch_of, length_sorted_batches, to_device
from conlst_ray.training.inference import autocast

log = logging.getLogger(__name__)

CACHE_VERSION = 1


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


@dataclass(frozen=True)
class FrozenRun:
    """How the frozen layers are run: the lower ``layers`` of the encoder, on
    ``device``, at ``precision`` (which is also the storage precision)."""
    layers: int
    device: str | torch.device = "cpu"
    precision: str = "fp32"
    batch_size: int = 64


def compute_states(model, rows, run: FrozenRun) -> FrozenStates:
    """The states of every row of ``rows`` (TokenRows or Encoded), computed
    over length-sorted batches."""
    n, device, precision = run.layers, run.device, run.precision
    lengths = rows.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = torch.zeros((int(offsets[-1]), model.encoder.config.hidden_size), dtype=storage_dtype(precision))
    pad_id = 0  # padded positions are masked and never stored
    for index in length_sorted_batches(lengths, run.batch_size):
        batch = to_device(batch_of(rows, index, pad_id), device)
        with autocast(device, precision):
            hidden = run_lower(model.encoder, n, batch["input_ids"], batch["attention_mask"],
                               batch.get("token_type_ids"))
        real = batch["attention_mask"].bool().cpu()
        vectors = hidden.float().cpu()[real].to(flat.dtype)
        positions = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in index])
        flat[torch.from_numpy(positions)] = vectors
    return FrozenStates(flat, offsets)


def cached_states(model, rows, folder: Path, run: FrozenRun, langs: Sequence[str] = ()) -> FrozenStates:
    """The states of ``rows`` from ``folder`` (the token folder the rows were
    read from, which keys them), computed and written there first if absent.
    The file is written under a temporary name and renamed when complete."""
    n, precision = run.layers, run.precision
    stamp = frozen_stamp(model.encoder, n, precision)
    offsets = np.concatenate([[0], np.cumsum(rows.lengths())])
    which = hashlib.sha256(f"{list(langs)} {len(rows)} {int(offsets[-1])}".encode()).hexdigest()[:8]
    path = Path(folder) / f"frozen-{stamp}-{which}.bin"
    meta_path = path.with_suffix(".json")
    dtype = storage_dtype(precision)
    hidden = model.encoder.config.hidden_size
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        raw = _read(path, dtype)  # read once: checked against its seal, then used
        problem = integrity.damage(path, raw) or _size_problem(path, int(offsets[-1]), hidden, dtype)
        if meta.get("tokens") == int(offsets[-1]) and not problem:
            return FrozenStates(_tensor(raw, dtype, hidden), offsets)
        if problem:
            log.info(f"[frozen] {problem}: computing the states again")
            integrity.discard(path)
    t0 = time.time()
    states = compute_states(model, rows, run)
    raw = states.flat.view(torch.int16) if dtype == torch.bfloat16 else states.flat
    write_via_temporary(path, lambda tmp: raw.numpy().tofile(tmp))
    integrity.seal(path, publish=False, data=raw.numpy())  # the states stay on this node
    meta_path.write_text(json.dumps({"tokens": int(offsets[-1]), "rows": len(rows), "layers": n,
                                     "dtype": str(dtype), "hidden": hidden}))
    log.info(f"[frozen] states of {len(rows)} rows after the lower {n} layers: {time.time() - t0:.0f} s -> {path.name}")
    return states  # what the file holds, already in memory


def _size_problem(path: Path, tokens: int, hidden: int, dtype: torch.dtype) -> str | None:
    """A states file of another size than its rows need (one sealed before
    it was cut, or written before seals existed)."""
    want = tokens * hidden * (2 if dtype == torch.bfloat16 else 4)
    size = path.stat().st_size
    return None if size == want else f"{path.name} has {size} bytes, its rows need {want}"


def _read(path: Path, dtype: torch.dtype) -> np.ndarray:
    """The file's values (bf16 kept as their int16 bits)."""
    return np.fromfile(path, dtype=np.int16 if dtype == torch.bfloat16 else np.float32)


def _tensor(raw: np.ndarray, dtype: torch.dtype, hidden: int) -> torch.Tensor:
    """The file's values as a [tokens, hidden] tensor."""
    t = torch.from_numpy(raw.reshape(-1, hidden))
    return t.view(dtype) if dtype == torch.bfloat16 else t
