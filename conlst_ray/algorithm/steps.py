"""One training step per stage: a batch and the model in, ``(loss, logs)`` out.

The parts each step uses are picked by the stage's typed config (ablation
switches of the paper's Table 3), so the Ray Train loops only fetch batches,
call a step, and step the optimizer. ``logs`` names every loss term that ran,
which is how a run shows what an ablation switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from conlst_ray.algorithm.augment import random_token_mask
from conlst_ray.algorithm.losses import (clcs_loss, conl_loss, contrastive_negative_loss, mixup,
                                         negative_learning_loss, ssl_loss, supervised_loss, unlabelled_loss)
from conlst_ray.algorithm.negatives import NegativePool, complementary_labels, unique_negatives
from conlst_ray.training import Encoded, batch_of


@dataclass
class ConlBatch:
    """Stage-1 inputs. ``negatives`` holds each distinct negative once;
    ``negative_index`` [B, K] points into it (-1 = none)."""
    anchors: dict
    complementary: torch.Tensor
    negatives: Optional[dict]
    negative_index: torch.Tensor
    source: Optional[dict] = None
    source_labels: Optional[torch.Tensor] = None


def plan_negatives(target: Encoded, index: np.ndarray, q: np.ndarray, pool: NegativePool, cfg,
                   generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, np.ndarray]:
    """For anchors ``target[index]``: complementary labels (Eq. 4) and K
    negative row indices each from the pool (Eq. 5), -1 = none. ``q`` holds
    the pseudo-label distribution of every target row."""
    comp = complementary_labels(torch.as_tensor(q[index]), cfg.gamma, generator)
    langs = [target.langs[i] for i in index]
    return comp, pool.draw(comp.numpy(), cfg.num_negatives, langs, scope=cfg.negative_scope)


def build_conl_batch(target: Encoded, index: np.ndarray, comp: torch.Tensor, drawn: np.ndarray, pad_id: int,
                     source: Optional[Encoded] = None, source_index: Optional[np.ndarray] = None) -> ConlBatch:
    """Tokenised anchors and their negatives, each distinct negative once,
    plus a source batch for the CLCS loss."""
    uniq, remapped = unique_negatives(drawn)
    batch = ConlBatch(anchors=batch_of(target, index, pad_id), complementary=comp,
                      negatives=batch_of(target, uniq, pad_id) if len(uniq) else None,
                      negative_index=torch.as_tensor(remapped))
    if source is not None and source_index is not None:
        batch.source = batch_of(source, source_index, pad_id)
        batch.source_labels = torch.as_tensor(source.labels[source_index])
    return batch


def make_conl_batch(target: Encoded, index: np.ndarray, q: np.ndarray, pool: NegativePool, cfg, pad_id: int,
                    generator: Optional[torch.Generator] = None, source: Optional[Encoded] = None,
                    source_index: Optional[np.ndarray] = None) -> ConlBatch:
    """``plan_negatives`` then ``build_conl_batch`` for one process."""
    comp, drawn = plan_negatives(target, index, q, pool, cfg, generator)
    return build_conl_batch(target, index, comp, drawn, pad_id, source, source_index)


def conl_step(model, batch: ConlBatch, cfg, generator: Optional[torch.Generator] = None):
    """Stage 1, Eq. 8: L_CL (Eq. 6) + lambda * L_CLCS (Eq. 7).

    Encoder passes: the anchors twice (two dropout views: anchor and
    positive), the unique negatives once, and the source batch once for CLCS.
    Switches: ``use_contrastive=False`` replaces L_CL by negative learning
    with the cross-entropy form on the target pseudo-labels (Eq. 1 with the
    complementary labels of Eq. 4; the paper's "w/o contrastive learning");
    ``use_clcs=False`` drops L_CLCS."""
    logs: dict[str, float] = {}
    if cfg.use_contrastive:
        z_anchor = model.contrast(model.embed(**batch.anchors))
        z_positive = model.contrast(model.embed(**batch.anchors))
        if batch.negatives is not None:
            z_bank = model.contrast(model.embed(**batch.negatives))
        else:
            z_bank = z_anchor.new_zeros((0, z_anchor.shape[-1]))
        loss = contrastive_negative_loss(z_anchor, z_positive, z_bank, batch.negative_index.to(z_anchor.device),
                                         cfg.tau, cfg.squared_distance)
        logs["loss_cl"] = loss.item()
        logs["negatives_missing"] = float((batch.negative_index < 0).float().mean())
    else:
        logits = model(**batch.anchors)
        loss = negative_learning_loss(logits, batch.complementary.to(logits.device)).mean()
        logs["loss_nl_target"] = loss.item()
    if cfg.use_clcs and batch.source is not None:
        l_clcs = clcs_loss(model(**batch.source), batch.source_labels.to(loss.device), generator)
        logs["loss_clcs"] = l_clcs.item()
        loss = conl_loss(loss, l_clcs, cfg.lambda_clcs)
    logs["loss"] = loss.item()
    return loss, logs


@dataclass
class SslBatch:
    """Stage-2 inputs: labelled source rows, and target rows as their strong
    view with the pseudo-label of their weak view and the selection mask."""
    source: dict
    source_labels: torch.Tensor
    strong: dict
    pseudo_labels: torch.Tensor
    mask: torch.Tensor


def strong_view(weak: dict, backtranslated: Optional[dict], cfg, special_ids: Iterable[int], mask_id: int,
                generator: Optional[torch.Generator] = None) -> tuple[dict, dict]:
    """The strong augmentation A(x) of Eq. 14: the back-translation when there
    is one and ``use_backtranslation`` is on, else the original text; then
    random token masking when ``use_masking`` is on. Returns (batch, logs)."""
    use_bt = cfg.use_backtranslation and backtranslated is not None
    view = dict(backtranslated if use_bt else weak)
    if cfg.use_masking and cfg.mask_rate > 0:
        view["input_ids"] = random_token_mask(view["input_ids"], view["attention_mask"], special_ids,
                                              mask_id, cfg.mask_rate, generator)
    return view, {"aug_backtranslation": float(use_bt), "aug_masking": float(cfg.use_masking)}


def ssl_step(model, batch: SslBatch, cfg, rng: np.random.Generator):
    """Stage 2, Eq. 12: l_sup (Eq. 13) + lambda_u * l_u (Eq. 14).

    With ``use_mixup`` the selected target rows' sentence embeddings are mixed
    (Eqs. 9-11) before the classification head, with one-hot pseudo-labels
    mixed alike, so the model never trains on an unmixed target sample. The
    mean of l_u is over all target rows of the batch (see ``unlabelled_loss``)."""
    logs: dict[str, float] = {}
    l_sup = supervised_loss(model(**batch.source), batch.source_labels)
    h = model.embed(**batch.strong)
    mask = batch.mask.to(h.device)
    n_rows, n_sel = mask.numel(), int(mask.sum())
    if cfg.use_mixup and n_sel >= 2:
        y = F.one_hot(batch.pseudo_labels.to(h.device)[mask], model.num_labels).float()
        h_mix, y_mix, lam, _ = mixup(h[mask], y, cfg.mixup_alpha, rng)
        selected = torch.ones(n_sel, dtype=torch.bool, device=h.device)
        l_u = unlabelled_loss(model.classify(h_mix), y_mix, selected, num_rows=n_rows)
        logs["mixup_lambda"] = lam
    else:
        l_u = unlabelled_loss(model.classify(h), batch.pseudo_labels.to(h.device), mask)
    loss = ssl_loss(l_sup, l_u, cfg.lambda_u)
    logs.update({"loss": loss.item(), "loss_sup": l_sup.item(), "loss_u": l_u.item(),
                 "selected_rate": n_sel / max(n_rows, 1)})
    return loss, logs


def source_step(model, batch: dict, labels: torch.Tensor):
    """Source fine-tuning: cross-entropy on labelled source rows (Eq. 13's form)."""
    loss = supervised_loss(model(**batch), labels)
    return loss, {"loss": loss.item()}
