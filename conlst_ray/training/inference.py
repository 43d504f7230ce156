"""Inference in plain PyTorch: the class distribution q of every row, the
numeric context of a forward pass, accuracy per language."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Optional

import numpy as np
import pyarrow as pa
import torch

from conlst_ray.data.schema import unique_in_order
from conlst_ray.training.batches import Encoded, batch_of, encode_table, length_sorted_batches, to_device

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


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


def dev_metrics(model, eval_rows: list, pad_id: int, device, cfg: "Config") -> dict:
    """Dev accuracy per language (``acc_xx``), its mean over the target
    languages (``target_dev_acc``, Tune's metric) and the source language's
    (``source_dev_acc``), computed on ``device``: the model must not leave the
    worker's device in the middle of a stage. ``cfg``: the run's config
    (evaluation batch size, precision, languages)."""
    accs = {}
    for rows in eval_rows:
        q = predict_proba(model, rows, pad_id, cfg.source.eval_batch_size, device, cfg.resources.precision)
        accs.update(accuracy_by_language(q, rows))
    model.train()
    targets = [accs[lang] for lang in cfg.data.target_langs if lang in accs]
    out = {f"acc_{lang}": acc for lang, acc in accs.items()}
    if targets:
        out["target_dev_acc"] = float(np.mean(targets))
    if cfg.data.source_lang in accs:
        out["source_dev_acc"] = accs[cfg.data.source_lang]
    return out
