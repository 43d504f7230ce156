"""Frozen lower layers computed once per row (``model.cache_frozen``): the
two halves of a BERT-family encoder and the per-row states between them.
Computing and caching the states is ``training/frozen_cache.py``.

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
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

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
