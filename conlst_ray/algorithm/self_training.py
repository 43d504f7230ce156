"""Stage 2, self-training (Eq. 9-14), as an algorithm object: each
iteration (an "epoch" of the loop) pseudo-labels every target row in the
workers, selects rows by its threshold rule, and trains on one strong view
per selected row under a schedule sized by what was selected."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from conlst_ray.algorithm.augment import random_token_mask
from conlst_ray.algorithm.base import StageAlgorithm
from conlst_ray.algorithm.losses import mixup, ssl_loss, supervised_loss, unlabelled_loss
from conlst_ray.algorithm.prior import class_shares, em_bias, em_prior, matching_bias
from conlst_ray.algorithm.registry import StageData, register
from conlst_ray.algorithm.thresholds import make_thresholds
from conlst_ray.models.language_bias import corrected
from conlst_ray.training.batches import Encoded, collate, to_device
from conlst_ray.training.distributed import all_gather_rows, micro_batches, my_slice, world
from conlst_ray.training.inference import predict_proba
from conlst_ray.training.optim import linear_warmup_schedule

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config, SSLConfig


# -- one step: a batch and the model in, (loss, logs) out ---------------------------------------

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


# -- the stage ---------------------------------------------------------------------------------

@register("ssl")
class SelfTraining(StageAlgorithm):
    """Eq. 12: l_sup on source rows + lambda_u * l_u on the selected target
    rows' strong views; ``backtranslated`` aligns a back-translation with
    each target row (or is None: masking and mixup only)."""

    epoch_key = "iteration"

    def __init__(self, model, cfg: "Config", tokenizer, device, source, target, backtranslated=None):
        super().__init__(model, cfg, tokenizer, device, source, target)
        self.backtranslated = backtranslated
        self.thresholds = make_thresholds(cfg.ssl, len(target), model.num_labels, target.langs)
        self.special_ids = set(tokenizer.all_special_ids)
        self.pred = self.selected = self.plans = None
        self.selection: dict = {}

    @classmethod
    def from_stage_data(cls, model, cfg: "Config", tokenizer, device, data: StageData) -> "SelfTraining":
        backtranslated = data.backtranslations() if cfg.ssl.use_backtranslation else None
        return cls(model, cfg, tokenizer, device, data.source, data.target, backtranslated)

    @property
    def epochs(self) -> int:
        return self.cfg.ssl.iterations

    def begin_epoch(self, epoch: int) -> None:
        """Pseudo-label, select (Eq. 14's indicator), plan the iteration's passes."""
        s = self.cfg.ssl
        t0 = time.perf_counter()
        q = pseudo_label_in_workers(self.model, self.target, self.pad_id, self.cfg, self.device)
        label_seconds = time.perf_counter() - t0
        if s.prior != "off":
            q = self.prior_corrected(q)
        self.thresholds.observe(q)
        mask, _ = self.thresholds.mask(torch.as_tensor(q))
        self.pred, self.selected = q.argmax(-1), np.flatnonzero(mask.numpy())
        n = len(self.selected)
        lengths = self.target.lengths()[self.selected]
        self.plans = [self.plan(n, s.batch_size, epoch * 1000 + e, lengths) if n >= s.batch_size else []
                      for e in range(s.epochs_per_iteration)]
        self.scheduler = ssl_schedule(self.optimizer, sum(map(len, self.plans)), s.warmup_ratio)
        self.selection = {"selected": int(n), "selected_share": float(n / len(self.target)),
                          "pseudo_label_seconds": label_seconds, "pseudo_label_rows": len(self.target),
                          **self.thresholds.describe(), **selection_quality(self.target, self.pred, self.selected)}

    def prior_corrected(self, q: np.ndarray) -> np.ndarray:
        """``ssl.prior``: each language's q corrected to its estimated class
        prior (algorithm/prior.py) before the rows are selected; under
        lang_class_top the per-class counts follow that prior."""
        source_prior = class_shares(self.source.labels, q.shape[1])
        langs = np.asarray(self.target.langs)
        out = q.astype(np.float64)
        for lang in np.unique(langs):
            rows = langs == lang
            if self.cfg.ssl.prior == "em":
                prior = em_prior(out[rows], source_prior)
                out[rows] = corrected(out[rows], em_bias(prior, source_prior))
            else:
                prior = source_prior
                out[rows] = corrected(out[rows], matching_bias(out[rows], source_prior))
            if hasattr(self.thresholds, "shares"):
                self.thresholds.shares[str(lang)] = prior
        return out.astype(np.float32)

    def epoch_steps(self, epoch: int) -> int:
        return sum(map(len, self.plans))

    def batches(self, epoch: int, first_step: int) -> Iterator[list]:
        s, seed = self.cfg.ssl, self.cfg.seed
        n = first_step
        for e, plan in enumerate(self.plans):
            src_rng = np.random.default_rng([seed, epoch, e, 11])
            for local in plan:
                gbatch = self.selected[local]
                src_idx = src_rng.choice(len(self.source), size=s.batch_size, replace=False)
                idx, sidx = my_slice(gbatch), my_slice(src_idx)
                g = torch.Generator().manual_seed(seed * 7919 + n)
                rng = np.random.default_rng([seed, n])
                parts = []
                for part, spart in zip(micro_batches(idx, s.grad_accum, "ssl.grad_accum"),
                                       np.array_split(sidx, s.grad_accum)):
                    batch, aug_logs = self._batch(part, spart, g)
                    parts.append((_logged(ssl_step, aug_logs), (batch, s, rng), len(part) / len(idx)))
                n += 1
                yield parts

    def train_step(self, runner, parts: list) -> dict:
        return {**super().train_step(runner, parts), "lr": self.scheduler.get_last_lr()[0]}

    def end_epoch(self, epoch: int) -> dict:
        return dict(self.selection)

    def state_dict(self) -> dict:
        # the schedule is rebuilt per iteration from what it selects
        return {**super().state_dict(), "scheduler": None, "thresholds": self.thresholds.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("thresholds"):
            self.thresholds.load_state_dict(state["thresholds"])

    def _batch(self, idx: np.ndarray, sidx: np.ndarray, g: torch.Generator) -> tuple[SslBatch, dict]:
        """Eq. 12's inputs for target rows ``idx`` (one strong view each) and source rows ``sidx``."""
        s, tok = self.cfg.ssl, self.tokenizer
        ids = TokenIds(self.pad_id, self.special_ids, tok.mask_token_id)
        view, mixup_rows, aug_logs = strong_view(self.target, self.backtranslated, idx, ids, s, g)
        source, labels = self.labelled_batch(sidx)
        batch = SslBatch(source=source, source_labels=labels, strong=to_device(view, self.device),
                         pseudo_labels=torch.as_tensor(self.pred[idx], device=self.device),
                         mask=torch.ones(len(idx), dtype=torch.bool, device=self.device), mixup_rows=mixup_rows)
        return batch, aug_logs


def pseudo_label_in_workers(model, target, pad_id: int, cfg: "Config", device) -> np.ndarray:
    """q for every target row: each worker labels its rows, then all-gather."""
    rank, size = world()
    mine = np.arange(len(target))[rank::size]
    q_mine = predict_proba(model, target, pad_id, cfg.source.eval_batch_size, device,
                           cfg.resources.precision, index=mine)
    model.train()
    idx, q = all_gather_rows(mine, q_mine)
    out = np.zeros((len(target), q.shape[1]), dtype=np.float32)
    out[idx] = q
    return out


def ssl_schedule(optimizer, n_steps: int, warmup_ratio: float):
    """One self-training iteration's learning rate: linear warm-up, then a
    linear decay that reaches 0 at the iteration's last step -- sized by the
    steps that really run (selected rows x epochs), not by the corpus."""
    for group in optimizer.param_groups:  # every iteration starts from the configured rate
        group["lr"] = group.get("initial_lr", group["lr"])
    return linear_warmup_schedule(optimizer, max(1, n_steps), warmup_ratio)


def selection_quality(target, pred: np.ndarray, selected: np.ndarray) -> dict:
    """Pseudo-label accuracy of the selected rows and of all rows (gold
    labels read for this analysis only, never trained on)."""
    gold: Optional[np.ndarray] = getattr(target, "gold", None)
    if gold is None or not (gold >= 0).any():
        return {}
    known = gold >= 0
    out = {"all_pseudo_label_acc": float((pred[known] == gold[known]).mean())}
    sel = selected[known[selected]]
    if len(sel):
        out["selected_pseudo_label_acc"] = float((pred[sel] == gold[sel]).mean())
    return out


def _logged(step_fn, extra: dict):
    """``step_fn`` whose logs also carry ``extra`` (a micro-batch's augmentation shares)."""
    def run(model, *args):
        loss, logs = step_fn(model, *args)
        return loss, {**logs, **extra}
    return run
