"""CoNLST's losses as small pure functions (tensors in, tensors out).

Equation numbers refer to "Improving Cross-lingual Transfer with Contrastive
Negative Learning and Self-training" (LREC-COLING 2024).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

# 1 - p is clamped to at least this before the log of Eq. 1: a confident wrong
# prediction (p -> 1 for the complementary class) must give a large but finite loss.
NL_EPS = 1e-6
# Added under the square root of the plain Euclidean distance: its gradient is
# undefined at 0, and an anchor and its positive can coincide (dropout off).
DIST_EPS = 1e-12


def random_complementary_labels(labels: torch.Tensor, num_classes: int,
                                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Complementary labels for labelled data (Eq. 1's y-bar): a class drawn
    uniformly from the classes other than the given label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device="cpu")
    return (labels + shift.to(labels.device)) % num_classes


def negative_learning_loss(logits: torch.Tensor, complementary: torch.Tensor,
                           eps: float = NL_EPS) -> torch.Tensor:
    """Eq. 1, per sample: -sum_k ybar_k log(1 - p_k), with ybar the one-hot
    complementary label, i.e. -log(1 - p_ybar). Returns a vector (one loss per
    row); ``1 - p`` is clamped to ``eps`` so the loss stays finite."""
    p = logits.float().softmax(-1).gather(-1, complementary.unsqueeze(-1)).squeeze(-1)
    return -torch.log((1.0 - p).clamp_min(eps))


def clcs_loss(source_logits: torch.Tensor, source_labels: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 7, the cross-lingual cross-space consistency loss: the mean of the
    negative-learning loss (Eq. 1) over N source samples, each with a random
    complementary label. (The paper prints a leading minus sign; Eq. 1 is
    already a negative log, so the sign is dropped here: the loss is >= 0 and
    minimised.)"""
    comp = random_complementary_labels(source_labels, source_logits.shape[-1], generator)
    return negative_learning_loss(source_logits, comp).mean()


def pairwise_similarity(a: torch.Tensor, b: torch.Tensor, tau: float, squared: bool = True) -> torch.Tensor:
    """The similarity of Eq. 6: negative Euclidean distance over tau, between
    rows of ``a`` and ``b`` that broadcast against each other (last dim = features).

    ``squared=True`` (default) uses -||a - b||^2 / tau, the squared Euclidean
    distance of prototypical networks (Snell et al., 2017), which the paper
    cites for its choice of distance; it is smooth everywhere.
    ``squared=False`` uses -||a - b|| / tau."""
    d2 = (a - b).pow(2).sum(-1)
    dist = d2 if squared else torch.sqrt(d2 + DIST_EPS)
    return -dist / tau


def contrast_space(z: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """The space Eq. 6 measures distances in: the contrastive head's output,
    L2-normalised onto the unit sphere by default (as SimCSE and SupCon do).

    Unnormalised, the head's outputs have norms of about 6 at a trained source
    model, so squared distances over a small tau put the positive tens of
    nats above every negative: the softmax of Eq. 6 saturates and almost no
    anchor carries a gradient. On the sphere the squared distance is
    2 - 2 cos, bounded by 4, and tau alone sets the scale."""
    return F.normalize(z.float(), dim=-1) if normalize else z


def eq6_logits(anchor: torch.Tensor, positive: torch.Tensor, negative_bank: torch.Tensor,
               negative_index: torch.Tensor, tau: float, squared: bool = True) -> torch.Tensor:
    """The logits of Eq. 6's softmax, [B, 1 + K]: column 0 is s(h_i, h_i'),
    the others s(h_i, h_j) for the K negatives (-inf where index is -1)."""
    s_pos = pairwise_similarity(anchor, positive, tau, squared)                     # [B]
    if negative_index.numel() == 0 or negative_bank.numel() == 0:
        s_neg = anchor.new_full((anchor.shape[0], 0), float("-inf"))
    else:
        neg = negative_bank[negative_index.clamp_min(0)]                              # [B, K, D]
        s_neg = pairwise_similarity(anchor.unsqueeze(1), neg, tau, squared)           # [B, K]
        s_neg = s_neg.masked_fill(negative_index < 0, float("-inf"))
    return torch.cat([s_pos.unsqueeze(1), s_neg], dim=1)


def contrastive_negative_loss(anchor: torch.Tensor, positive: torch.Tensor, negative_bank: torch.Tensor,
                              negative_index: torch.Tensor, tau: float, squared: bool = True,
                              reduction: str = "mean") -> torch.Tensor:
    """Eq. 6, the contrastive negative learning loss:

        L_CL = -log( exp(s(h_i, h_i')) / (exp(s(h_i, h_i')) + sum_j exp(s(h_i, h_j))) )

    with h_i the anchor (one dropout pass), h_i' its positive (another dropout
    pass of the same sentence), h_j its K negatives (confident target samples
    whose pseudo-label is one of the anchor's complementary labels, Eq. 5),
    all taken in ``contrast_space``, and s = ``pairwise_similarity``.

    The negatives are given as a bank of unique embeddings ``negative_bank``
    [U, D] and, per anchor, ``negative_index`` [B, K] into it, so a sample
    drawn by several anchors is encoded once. Index -1 marks a missing
    negative (its class had too few members): it is left out of the sum. An
    anchor without any negative contributes 0 (log(e^s / e^s)).
    """
    loss = eq6_loss(eq6_logits(anchor, positive, negative_bank, negative_index, tau, squared))
    return loss.mean() if reduction == "mean" else loss


def eq6_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 6 per anchor from its logits (``eq6_logits``): -log softmax of the positive."""
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


# An anchor whose Eq. 6 loss is below this carries no gradient worth the name:
# its positive is so much closer than every negative that the softmax is 1.
SATURATED = 1e-6


def eq6_effect(logits: torch.Tensor, negative_index: torch.Tensor) -> dict:
    """What shows Eq. 6 acting (DESIGN.md, "Effects, not only formulas"): the
    share of anchors with negatives whose loss is saturated (< 1e-6), and the
    mean similarity to the positive and to the negatives."""
    with torch.no_grad():
        per_anchor = eq6_loss(logits)
        has_neg = (negative_index >= 0).any(dim=1).to(per_anchor.device)
        neg = logits[:, 1:]
        finite = torch.isfinite(neg)
        out = {"sim_pos": float(logits[:, 0].mean()),
               "sim_neg": float(neg[finite].mean()) if finite.any() else float("nan"),
               "saturated_share": float((per_anchor[has_neg] < SATURATED).float().mean()) if has_neg.any()
               else float("nan")}
    return out


def conl_loss(l_cl: torch.Tensor, l_clcs: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 8, the stage-1 objective: L_CoNL = L_CL + lambda * L_CLCS
    (paper: lambda = 0.001)."""
    return l_cl + lam * l_clcs


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 13, l_sup: cross-entropy of the model on labelled source samples."""
    return F.cross_entropy(logits.float(), labels)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy against a distribution (mixup's soft targets, Eq. 10)."""
    return -(targets * logits.float().log_softmax(-1)).sum(-1)


def unlabelled_loss(strong_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                    num_rows: Optional[int] = None) -> torch.Tensor:
    """Eq. 14, the FixMatch unlabelled loss: cross-entropy of the strong view's
    prediction against the pseudo-label of the weak view (hard class ids, or a
    distribution after mixup), kept only where ``mask`` is set (confidence above
    the class's threshold).

    The mean is taken over *all* unlabelled samples of the batch, masked ones
    included (as FixMatch and USB do): the loss shrinks when few samples pass
    the threshold instead of over-weighting the few that do. ``num_rows``
    overrides that count when only the selected rows are passed (mixup)."""
    if targets.dtype in (torch.int64, torch.int32):
        per_row = F.cross_entropy(strong_logits.float(), targets, reduction="none")
    else:
        per_row = soft_cross_entropy(strong_logits, targets)
    return (per_row * mask.float()).sum() / max(num_rows if num_rows is not None else mask.numel(), 1)


def ssl_loss(l_sup: torch.Tensor, l_u: torch.Tensor, lambda_u: float) -> torch.Tensor:
    """Eq. 12, the self-training objective: L_SSL = l_sup + lambda_u * l_u
    (paper: lambda_u = 1)."""
    return l_sup + lambda_u * l_u


def mixup(h: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator,
          lam: Optional[float] = None, perm: Optional[torch.Tensor] = None):
    """Eqs. 9-11, mixup of sentence embeddings:

        h~ = lambda h_i + (1 - lambda) h_j,   y~ = lambda y_i + (1 - lambda) y_j,
        lambda ~ Beta(alpha, alpha)   (paper: alpha = 4)

    The partner j of row i is ``perm[i]`` (a random permutation of the batch);
    ``y`` holds soft targets (one-hot for hard labels). One lambda per batch,
    as in Zhang et al. (2018). Returns (h~, y~, lambda, perm)."""
    if lam is None:
        lam = float(rng.beta(alpha, alpha))
    if perm is None:
        perm = torch.as_tensor(rng.permutation(h.shape[0]), device=h.device)
    return lam * h + (1.0 - lam) * h[perm], lam * y + (1.0 - lam) * y[perm], lam, perm
