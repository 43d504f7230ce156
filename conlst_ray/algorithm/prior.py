"""The class prior of a target language, estimated without labels, and the
logit bias that corrects a classifier's outputs to it.

Not an equation of the CoNLST paper: this is the free baseline every stage
must beat. A source model trained on balanced English data carries the
English class prior into languages where its inputs look different; on
XNLI the zero-shot model over-predicts one class in every target language
(docs/PRIOR.md). Re-weighting its outputs per language costs no training.

The correction is a per-language bias added to the logits (a saved model
carries it in ``config.json``; models/language_bias.py applies it). The
priors it can follow, from the unlabelled rows:

- the source prior itself (``matching_bias`` to ``class_shares`` of the
  labelled rows): the corpus has the labelled data's shares, and the
  model's excess of a class is its own bias in that language;
- ``em_prior``: the EM of Saerens, Latinne and Decaestecker (2002), which
  takes the model as calibrated in the target language (pure label shift);
- ``bbse_prior``: black-box shift estimation (Lipton et al. 2018) on
  source-language rows, through the confusion matrix of labelled rows.

With unlabelled text alone a corpus with more of a class and a model that
leans to it look the same: which one a run assumes is ``selection.prior``
(and ``ssl.prior``), and the report shows the estimates side by side.
"""

from __future__ import annotations

import numpy as np

from conlst_ray.models.language_bias import EPS, reweighted


def class_shares(labels, num_classes: int) -> np.ndarray:
    """The class shares of labelled rows (labels < 0, unknown, left out);
    uniform when none is known."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=num_classes)[:num_classes].astype(float)
    return counts / counts.sum() if counts.sum() else np.full(num_classes, 1.0 / num_classes)


def em_prior(q: np.ndarray, source_prior: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """The target prior by EM (Saerens et al. 2002, their Eq. 2.6-2.7):
    E-step, each row's posterior re-weighted by pi_t / pi_s and renormalised;
    M-step, pi_t = the mean of those posteriors. ``q``: [N, C] posteriors of
    the unlabelled rows under the source prior ``source_prior`` [C]."""
    q = np.asarray(q, dtype=np.float64)
    source = _normalised(source_prior)
    prior = source.copy()
    for _ in range(max_iter):
        post = reweighted(q, prior / source)
        new = post.mean(0)
        if np.abs(new - prior).max() < tol:
            return _normalised(new)
        prior = new
    return _normalised(prior)


def matching_bias(q: np.ndarray, prior: np.ndarray, max_iter: int = 200, tol: float = 1e-6) -> np.ndarray:
    """The logit bias b [C] under which the rows' mean posterior equals
    ``prior``: softmax(log q + b) averaged over the rows = prior. A fixed
    point b <- b + log(prior / mean); its first step is "divide q by its
    mean", the correction docs/REAL_GAIN.md measured."""
    q = np.asarray(q, dtype=np.float64)
    target = _normalised(prior)
    bias = np.zeros(q.shape[1])
    for _ in range(max_iter):
        mean = reweighted(q, np.exp(bias)).mean(0)
        if np.abs(mean - target).max() < tol:
            break
        bias = bias + np.log(np.maximum(target, EPS)) - np.log(np.maximum(mean, EPS))
    return bias - bias.mean()


def em_bias(prior: np.ndarray, source_prior: np.ndarray) -> np.ndarray:
    """The logit bias of Saerens et al.'s correction: log(pi_t / pi_s)."""
    bias = np.log(np.maximum(_normalised(prior), EPS)) - np.log(np.maximum(_normalised(source_prior), EPS))
    return bias - bias.mean()


def _normalised(p) -> np.ndarray:
    p = np.maximum(np.asarray(p, dtype=np.float64), EPS)
    return p / p.sum()


def confusion(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """C[i, j] = P(predicted i | gold j) over labelled rows."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    out = np.zeros((num_classes, num_classes))
    for j in range(num_classes):
        rows = gold == j
        if rows.any():
            out[:, j] = np.bincount(pred[rows], minlength=num_classes)[:num_classes] / rows.sum()
    return out


def bbse_prior(pred: np.ndarray, conf: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """Black-box shift estimation (Lipton, Wang and Smola 2018): the prior w
    that explains the predicted shares mu of unlabelled rows through the
    confusion matrix of labelled rows, C w = mu (least squares), clipped at
    ``floor`` and renormalised. Valid where the rows' p(x | y) is that of
    the labelled rows: the source language, not a target one (a model's
    language bias is not in C)."""
    n = conf.shape[0]
    mu = np.bincount(np.asarray(pred), minlength=n)[:n] / max(len(pred), 1)
    w = np.linalg.lstsq(conf, mu, rcond=None)[0]
    return _normalised(np.maximum(w, floor))
