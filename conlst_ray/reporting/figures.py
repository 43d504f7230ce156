"""Histograms of clean and noisy pseudo-labels by confidence (the paper's
Figures 3 and 4), written as PNG files with matplotlib's file-only backend."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from conlst_ray.reporting.analysis import LabelledPredictions

CLEAN, NOISY = "tab:blue", "tab:orange"   # the paper's colours


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel(ax, confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray, title: str) -> None:
    ax.hist([confidence[correct], confidence[~correct]], bins=edges, color=[CLEAN, NOISY], label=["clean", "noisy"])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("confidence")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)


CAPTION = ("clean = the pseudo-label equals the gold label, noisy = it does not (gold labels read for this "
           "analysis only); rows share one count scale per column")


def _decorate(fig, title: str) -> None:
    """A title naming the run and what is shown, and the caption."""
    if title:
        fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.005, CAPTION, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95 if title else 1))


def _save(plt, fig, path: str | Path):
    """Write ``path`` atomically and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)
    return fig


def confidence_histograms(panels: list[tuple[str, dict[str, LabelledPredictions]]], langs: list[str],
                          path: str | Path, num_labels: int = 3, bins: int = 14, title: str = ""):
    """One row per panel (e.g. 'before CoNL', 'after CoNL'), one column per
    language on one count scale, so before and after compare by eye; each
    plot shows clean and noisy sample counts over confidence. Writes
    ``path`` (atomically) and returns the matplotlib Figure."""
    plt = _pyplot()
    langs = [lang for lang in langs if all(lang in preds for _, preds in panels)]
    if not langs:
        raise ValueError("no language has predictions in every panel")
    # max softmax probability is never below 1/C, so the axis starts there
    edges = np.linspace(1.0 / num_labels, 1.0, bins + 1)
    fig, axes = plt.subplots(len(panels), len(langs), figsize=(3.2 * len(langs), 2.8 * len(panels) + 0.8),
                             squeeze=False, sharex=True, sharey="col")
    for r, (name, preds) in enumerate(panels):
        for c, lang in enumerate(langs):
            _panel(axes[r][c], preds[lang].confidence, preds[lang].correct, edges, f"{lang}: {name}")
    _decorate(fig, title)
    return _save(plt, fig, path)


def class_histograms(panels: list[tuple[str, dict[str, LabelledPredictions]]], labels: Sequence[str],
                     path: str | Path, bins: int = 14, title: str = ""):
    """The same counts by pseudo-label class, all target languages pooled:
    one row per panel, one column per label of the task (named), so a class
    whose confident rows are mostly noisy shows. Writes ``path``."""
    plt = _pyplot()
    edges = np.linspace(1.0 / len(labels), 1.0, bins + 1)
    fig, axes = plt.subplots(len(panels), len(labels), figsize=(3.2 * len(labels), 2.8 * len(panels) + 0.8),
                             squeeze=False, sharex=True, sharey="col")
    for r, (name, preds) in enumerate(panels):
        conf = np.concatenate([p.confidence for p in preds.values()])
        correct = np.concatenate([p.correct for p in preds.values()])
        predicted = np.concatenate([p.predicted for p in preds.values()])
        for k, label in enumerate(labels):
            mine = predicted == k
            _panel(axes[r][k], conf[mine], correct[mine], edges, f"{label}: {name}")
    _decorate(fig, title)
    return _save(plt, fig, path)
