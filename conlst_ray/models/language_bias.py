"""A model's class-prior correction per language applied to its outputs:
a bias per language added to the logits (``config.json``'s
``language_bias``, written by reporting/prior.py). Here, below the
training layer, because inference applies it (predict, the Python API, the
report's scoring); how the bias is estimated is algorithm/prior.py."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def reweighted(q: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Posteriors multiplied by a weight per class, renormalised per row."""
    post = np.asarray(q, dtype=np.float64) * np.asarray(weights, dtype=np.float64)[None, :]
    return post / np.maximum(post.sum(1, keepdims=True), EPS)


def corrected(q: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Posteriors after adding ``bias`` to the logits (log q up to a constant)."""
    return reweighted(q, np.exp(np.asarray(bias, dtype=np.float64)))


def correct_by_language(q: np.ndarray, langs, bias: dict) -> np.ndarray:
    """Each row's posteriors corrected with its language's bias; rows of a
    language without one (the source language) are left as they are."""
    if not bias:
        return q
    langs = np.asarray(langs)
    out = np.array(q, dtype=np.float64, copy=True)
    for lang, b in bias.items():
        rows = langs == lang
        if rows.any():
            out[rows] = corrected(out[rows], b)
    return out.astype(np.asarray(q).dtype)
