"""Stage 1, contrastive negative learning (Eq. 4-8), as an algorithm object:
it owns the epoch's negative pool (Eq. 5) and gamma, and the draws that
give every worker the same complementary labels and negatives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np
import torch

from conlst_ray.algorithm.base import StageAlgorithm
from conlst_ray.algorithm.losses import (
    clcs_loss,
    conl_loss,
    contrast_space,
    eq6_effect,
    eq6_logits,
    eq6_loss,
    negative_learning_loss,
)
from conlst_ray.algorithm.negatives import (
    NegativePool,
    Predictions,
    complementary_labels,
    complementary_sets,
    relative_gamma,
    unique_negatives,
)
from conlst_ray.algorithm.registry import StageData, register
from conlst_ray.training.batches import Encoded, batch_of, to_device
from conlst_ray.training.distributed import micro_batches, my_slice, world
from conlst_ray.training.optim import linear_warmup_schedule

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config, CoNLConfig


# -- one step: a batch and the model in, (loss, logs) out ---------------------------------------

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


# -- the stage ---------------------------------------------------------------------------------

@register("conl")
class CoNL(StageAlgorithm):
    """L_CL (Eq. 6) on target anchors + lambda * L_CLCS (Eq. 7) on source
    rows; ``q`` is the source model's pseudo-label distribution of every
    target row (fixed for the stage)."""

    step_fn = staticmethod(conl_step)  # Eq. 8; a variant may replace the step and keep the batches

    def __init__(self, model, cfg: "Config", tokenizer, device, source, target, q: np.ndarray):
        super().__init__(model, cfg, tokenizer, device, source, target)
        c = cfg.conl
        self.q = q
        self.scheduler = linear_warmup_schedule(self.optimizer, max(1, (len(target) // c.batch_size) * c.epochs), 0.0)
        self.pool = self.gamma = self.gamma_by_lang = self.source_rng = None
        self.head_warmup: dict = {}

    @classmethod
    def from_stage_data(cls, model, cfg: "Config", tokenizer, device, data: StageData) -> "CoNL":
        return cls(model, cfg, tokenizer, device, data.source, data.target, data.pseudo_labels())

    def begin_epoch(self, epoch: int) -> None:
        """Eq. 5's pool of confident target rows and its gamma (absolute, or
        per language under ``conl.gamma_quantile``)."""
        self.pool, self.gamma, self.gamma_by_lang = conl_pool(self.target, self.q, self.cfg.conl,
                                                             self.model.num_labels, seed=self.cfg.seed * 1000 + epoch)
        self.source_rng = np.random.default_rng([self.cfg.seed, epoch, 7])
        if epoch == 0 and self.cfg.conl.head_warmup_steps:
            self.head_warmup = fit_contrastive_head(self)

    def epoch_steps(self, epoch: int) -> int:
        return len(self.target) // self.cfg.conl.batch_size

    def batches(self, epoch: int, first_step: int) -> Iterator[list]:
        c, seed = self.cfg.conl, self.cfg.seed
        rank, size = world()
        for n, gbatch in enumerate(self.plan(len(self.target), c.batch_size, epoch, self.target.lengths())):
            # global draws (complementary labels, negatives, source rows) are made
            # identically on every worker; each then builds the batch of its rows
            g = torch.Generator().manual_seed(seed * 100003 + first_step + n)
            comp, drawn = plan_negatives(self.target, gbatch, self.q, self.pool, c, g, self.gamma)
            src_idx = self.source_rng.choice(len(self.source), size=c.source_batch_size, replace=False)
            rows = np.arange(len(gbatch))[rank::size]
            anchor_parts = micro_batches(rows, c.grad_accum, "conl.grad_accum")
            source_parts = np.array_split(my_slice(src_idx), len(anchor_parts))
            yield [(self.step_fn, (self._conl_batch(gbatch[a], comp[a], drawn[a], s), c, g), len(a) / len(rows))
                   for a, s in zip(anchor_parts, source_parts)]

    def end_epoch(self, epoch: int) -> dict:
        out = {f"gamma_{lang}": g for lang, g in self.gamma_by_lang.items()}
        out.update(self.head_warmup if epoch == 0 else {})
        out["pool_size"] = self.pool.size()  # confident target samples negatives are drawn from (Eq. 5)
        return out

    def _conl_batch(self, anchors, complementary, drawn, source_rows) -> ConlBatch:
        """Eq. 8's inputs for one micro-batch, on the device."""
        return self._on_device(build_conl_batch(self.target, anchors, complementary, drawn, self.pad_id, self.source,
                                                source_rows))

    def _on_device(self, batch: ConlBatch) -> ConlBatch:
        batch.anchors = to_device(batch.anchors, self.device)
        if batch.negatives is not None:
            batch.negatives = to_device(batch.negatives, self.device)
        if batch.source is not None:
            batch.source = to_device(batch.source, self.device)
            batch.source_labels = batch.source_labels.to(self.device)
        return batch


def fit_contrastive_head(algo: CoNL) -> dict:
    """``conl.head_warmup_steps``: Eq. 6 with only the contrastive head
    trained, on the target rows' sentence embeddings h computed once (eval
    mode; the encoder is frozen here, so they are fixed), the two views being
    two dropout masks on h. The paper starts CoNL with a random head that the
    encoder's updates then follow. Returns the loss before and after."""
    from conlst_ray.algorithm.losses import contrast_space, eq6_logits, eq6_loss
    from conlst_ray.algorithm.negatives import unique_negatives
    from conlst_ray.training.batches import batch_of, length_sorted_batches
    from conlst_ray.training.inference import autocast

    c, model = algo.cfg.conl, algo.model
    was_training = model.training
    model.eval()
    h = torch.zeros((len(algo.target), model.encoder.config.hidden_size))
    with torch.no_grad():
        for index in length_sorted_batches(algo.target.lengths(), algo.cfg.source.eval_batch_size):
            with autocast(algo.device, algo.cfg.resources.precision):
                h[index] = model.embed(**to_device(batch_of(algo.target, index, algo.pad_id),
                                                   algo.device)).float().cpu()
    model.train(was_training)
    head = model.contrastive_head
    optimizer = torch.optim.AdamW(head.parameters(), lr=c.head_warmup_lr)
    g = torch.Generator().manual_seed(algo.cfg.seed * 7 + 1)
    rng = np.random.default_rng([algo.cfg.seed, 17])
    h = h.to(algo.device)
    losses = []
    for _ in range(c.head_warmup_steps):
        rows = rng.choice(len(h), size=min(c.batch_size, len(h)), replace=False)
        _, drawn = plan_negatives(algo.target, rows, algo.q, algo.pool, c, g, algo.gamma)
        uniq, remapped = unique_negatives(drawn)

        def space(x):
            return contrast_space(head(torch.nn.functional.dropout(x, model.dropout.p, training=True)), c.normalize)

        bank = space(h[uniq]) if len(uniq) else h.new_zeros((0, head.out_features))
        logits = eq6_logits(space(h[rows]), space(h[rows]), bank, torch.as_tensor(remapped, device=h.device),
                            c.tau, c.squared_distance)
        loss = eq6_loss(logits).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    k = max(1, len(losses) // 10)
    return {"head_warmup_loss_first": float(np.mean(losses[:k])), "head_warmup_loss_last": float(np.mean(losses[-k:]))}
