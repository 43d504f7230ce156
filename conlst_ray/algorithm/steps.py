"""One training step per stage: a batch and the model in, ``(loss, logs)`` out.

The parts each step uses are picked by the stage's typed config (ablation
switches of the paper's Table 3), so the Ray Train loops only fetch batches,
call a step, and step the optimizer. ``logs`` names every loss term that ran,
which is how a run shows what an ablation switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from conlst_ray.algorithm.augment import random_token_mask
from conlst_ray.algorithm.losses import (
    clcs_loss,
    conl_loss,
    contrast_space,
    eq6_effect,
    eq6_logits,
    eq6_loss,
    mixup,
    negative_learning_loss,
    ssl_loss,
    supervised_loss,
    unlabelled_loss,
)
from conlst_ray.algorithm.negatives import (
    NegativePool,
    Predictions,
    complementary_labels,
    complementary_sets,
    relative_gamma,
    unique_negatives,
)
from conlst_ray.training.batches import Encoded, batch_of, collate

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import CoNLConfig, SSLConfig


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


def conl_pool(target: Encoded, q: np.ndarray, cfg: "CoNLConfig", num_classes: int,
              seed: int) -> tuple[NegativePool, Optional[np.ndarray], dict]:
    """Eq. 5's pool of confident target rows for one CoNL epoch, with gamma
    the absolute ``cfg.gamma`` or, under ``conl.gamma_quantile``, one per
    language. Returns (pool, gamma per row or None, language -> gamma)."""
    conf = q.max(-1)
    classes = q.argmax(-1) if cfg.gamma_groups == "class" else None
    gamma, by_lang = (relative_gamma(conf, target.langs, cfg.gamma_quantile, classes) if cfg.gamma_quantile
                      else (None, {}))
    pool = NegativePool(np.arange(len(target)), Predictions(q.argmax(-1), conf, target.langs),
                        cfg.gamma if gamma is None else gamma, num_classes, seed=seed)
    return pool, gamma, by_lang


def plan_negatives(target: Encoded, index: np.ndarray, q: np.ndarray, pool: NegativePool, cfg: "CoNLConfig",
                   generator: Optional[torch.Generator] = None,
                   gamma: Optional[np.ndarray] = None) -> tuple[torch.Tensor, np.ndarray]:
    """For anchors ``target[index]``: one complementary label each (Eq. 4,
    used by the NL ablation) and K negative row indices each from the pool
    (Eq. 5), -1 = none, drawn from the anchor's complementary set
    (``conl.complementary``) through one shared bank per step
    (``conl.negative_bank``). ``q`` holds the pseudo-label distribution of
    every target row; ``gamma`` optionally one threshold per target row
    (``conl.gamma_quantile``), else ``cfg.gamma``."""
    q_batch = torch.as_tensor(q[index])
    g = cfg.gamma if gamma is None else torch.as_tensor(gamma[index], dtype=q_batch.dtype)
    comp = complementary_labels(q_batch, g, generator)  # one class: the "w/o contrastive" ablation's Eq. 1
    if cfg.complementary == "set":
        sets = complementary_sets(q_batch, g).numpy()
    else:
        sets = torch.nn.functional.one_hot(comp, q_batch.shape[-1]).bool().numpy()
    langs = [target.langs[i] for i in index]
    bank = (cfg.bank_per_class or cfg.num_negatives) if cfg.negative_bank == "step" else None
    return comp, pool.draw_sets(sets, cfg.num_negatives, langs, scope=cfg.negative_scope, bank_per_class=bank)


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


def conl_step(model, batch: ConlBatch, cfg: "CoNLConfig", generator: Optional[torch.Generator] = None):
    """Stage 1, Eq. 8: L_CL (Eq. 6) + lambda * L_CLCS (Eq. 7).

    Encoder passes: the anchors twice (two dropout views: anchor and
    positive), the unique negatives once, and the source batch once for CLCS.
    Switches: ``use_contrastive=False`` replaces L_CL by negative learning
    with the cross-entropy form on the target pseudo-labels (Eq. 1 with the
    complementary labels of Eq. 4; the paper's "w/o contrastive learning");
    ``use_clcs=False`` drops L_CLCS."""
    logs: dict[str, float] = {}
    if cfg.use_contrastive:
        def space(inputs):
            return contrast_space(model.contrast(model.embed(**inputs)), cfg.normalize)

        z_anchor, z_positive = space(batch.anchors), space(batch.anchors)  # two dropout views
        z_bank = space(batch.negatives) if batch.negatives is not None else z_anchor.new_zeros((0, z_anchor.shape[-1]))
        index = batch.negative_index.to(z_anchor.device)
        logits = eq6_logits(z_anchor, z_positive, z_bank, index, cfg.tau, cfg.squared_distance)
        loss = eq6_loss(logits).mean()
        logs["loss_cl"] = loss.item()
        logs["negatives_missing"] = float((batch.negative_index < 0).float().mean())
        logs["bank_size"] = float(z_bank.shape[0])
        logs.update(eq6_effect(logits, index))
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
    view with the pseudo-label of their weak view and the selection mask;
    ``mixup_rows`` marks the rows whose strong view is a mixup (Eqs. 9-11)."""
    source: dict
    source_labels: torch.Tensor
    strong: dict
    pseudo_labels: torch.Tensor
    mask: torch.Tensor
    mixup_rows: Optional[torch.Tensor] = None


BACKTRANSLATION, MASKING, MIXUP = "backtranslation", "masking", "mixup"


def enabled_augmentations(cfg: "SSLConfig", have_backtranslation: bool) -> list[str]:
    """The strong augmentations this config switches on (ablation switches)."""
    on = {BACKTRANSLATION: cfg.use_backtranslation and have_backtranslation,
          MASKING: cfg.use_masking and cfg.mask_rate > 0, MIXUP: cfg.use_mixup}
    return [name for name, enabled in on.items() if enabled]


class TokenIds(NamedTuple):
    """The tokenizer's ids a view needs: padding, the special tokens masking
    leaves alone, and the mask token."""
    pad: int
    special: Iterable[int]
    mask: int


def strong_view(target: Encoded, backtranslated: Optional[Encoded], index: np.ndarray, ids: TokenIds, cfg: "SSLConfig",
                generator: Optional[torch.Generator] = None):
    """The strong views A(x) of Eq. 14 for rows ``target[index]``.

    ``ssl.augmentation=one_per_row`` (default, the paper's set-up): each row
    gets exactly one augmentation drawn uniformly among the enabled ones --
    its back-translation, random token masking, or mixup of its sentence
    embedding (applied in ``ssl_step``). ``stack``: every row gets the
    back-translation when there is one, then masking, then mixup.
    Returns (batch, mixup_rows [B] bool, logs with each augmentation's share)."""
    names = enabled_augmentations(cfg, backtranslated is not None)
    n = len(index)
    if cfg.augmentation == "stack":
        chosen = {name: np.ones(n, dtype=bool) for name in names}
    else:
        draw = torch.randint(0, max(len(names), 1), (n,), generator=generator).numpy()
        chosen = {name: draw == j for j, name in enumerate(names)}
    use_bt = chosen.get(BACKTRANSLATION, np.zeros(n, dtype=bool))
    rows = [(backtranslated if bt else target, i) for bt, i in zip(use_bt, index)]
    types = None if target.token_type_ids is None else [src.token_type_ids[i] for src, i in rows]
    view = collate([src.input_ids[i] for src, i in rows], types, ids.pad)
    if MASKING in chosen:
        maskable = view["attention_mask"] * torch.as_tensor(chosen[MASKING], dtype=torch.long)[:, None]
        view["input_ids"] = random_token_mask(view["input_ids"], maskable, ids.special, ids.mask, cfg.mask_rate,
                                              generator)
    frozen = getattr(target, "frozen", None)
    if frozen is not None:  # cached states of the rows' own tokens; a changed row runs the frozen layers again
        stale = use_bt | (chosen[MASKING] if MASKING in chosen else np.zeros(n, dtype=bool))
        view["frozen_hidden"] = frozen.padded(index, view["input_ids"].shape[1], keep=~stale)
        view["frozen_stale"] = torch.as_tensor(stale)
    mixup_rows = torch.as_tensor(chosen.get(MIXUP, np.zeros(n, dtype=bool)))
    logs = {f"aug_{name}": float(chosen[name].mean()) if name in chosen else 0.0
            for name in (BACKTRANSLATION, MASKING, MIXUP)}
    return view, mixup_rows, logs


def ssl_step(model, batch: SslBatch, cfg: "SSLConfig", rng: np.random.Generator):
    """Stage 2, Eq. 12: l_sup (Eq. 13) + lambda_u * l_u (Eq. 14).

    Selected rows marked in ``mixup_rows`` (two or more) have their sentence
    embeddings mixed among themselves (Eqs. 9-11) before the classification
    head, with one-hot pseudo-labels mixed alike; the other selected rows
    train on their strong view as it is. The mean of l_u is over all target
    rows of the batch (see ``unlabelled_loss``)."""
    logs: dict[str, float] = {}
    l_sup = supervised_loss(model(**batch.source), batch.source_labels)
    h = model.embed(**batch.strong)
    mask = batch.mask.to(h.device)
    labels = batch.pseudo_labels.to(h.device)
    mix = mask & (batch.mixup_rows.to(h.device) if batch.mixup_rows is not None else torch.zeros_like(mask))
    if int(mix.sum()) < 2:  # mixup needs a partner
        mix = torch.zeros_like(mask)
    plain = mask & ~mix
    n_rows, n_sel = mask.numel(), int(mask.sum())
    l_u = unlabelled_loss(model.classify(h), labels, plain)
    if mix.any():
        y = F.one_hot(labels[mix], model.num_labels).float()
        h_mix, y_mix, lam, _ = mixup(h[mix], y, cfg.mixup_alpha, rng)
        l_u = l_u + unlabelled_loss(model.classify(h_mix), y_mix, torch.ones(len(y), dtype=torch.bool,
                                                                            device=h.device), num_rows=n_rows)
        logs["mixup_lambda"] = lam
    loss = ssl_loss(l_sup, l_u, cfg.lambda_u)
    logs.update({"loss": loss.item(), "loss_sup": l_sup.item(), "loss_u": l_u.item(),
                 "selected_rate": n_sel / max(n_rows, 1)})
    return loss, logs


def source_step(model, batch: dict, labels: torch.Tensor):
    """Source fine-tuning: cross-entropy on labelled source rows (Eq. 13's form)."""
    loss = supervised_loss(model(**batch), labels)
    return loss, {"loss": loss.item()}
