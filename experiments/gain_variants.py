"""The study's probes (experiments/real_gain.py): each a small subclass of a
stage object that changes one thing. Variants a user may want to run are
config keys instead (conl.optimizer, conl.train_classifier,
conl.gamma_groups, ssl.thresholding); these three are measurements only."""

from __future__ import annotations

from itertools import islice

from conlst_ray.algorithm.conl import CoNL
from conlst_ray.algorithm.losses import clcs_loss
from conlst_ray.algorithm.self_training import SelfTraining
from conlst_ray.training.optim import linear_warmup_schedule


class ZeroRateCoNL(CoNL):
    """The sanity row: CoNL with learning rate 0. Every step runs as in CoNL
    (forwards, backward, clipping, AdamW's update, its weight decay scaled
    by the rate) and must leave the model exactly as it was, so its scores
    reproduce zero-shot to the last digit. A fixed number of steps is
    enough to show that: the study's GPU minutes go to the other rows."""

    max_steps = 12

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = 0.0
        self.scheduler = linear_warmup_schedule(self.optimizer, 1, 0.0)

    def epoch_steps(self, epoch: int) -> int:
        return min(super().epoch_steps(epoch), self.max_steps)

    def batches(self, epoch: int, first_step: int):
        return islice(super().batches(epoch, first_step), self.max_steps)


def clcs_only_step(model, batch, cfg, generator=None):
    """Eq. 8 without its first term: lambda * L_CLCS (Eq. 7) alone, to see
    what the consistency term does to the model by itself (with Adam, its
    weight lambda does not shrink the update)."""
    l_clcs = clcs_loss(model(**batch.source), batch.source_labels, generator)
    loss = cfg.lambda_clcs * l_clcs
    return loss, {"loss": loss.item(), "loss_clcs": l_clcs.item()}


class ClcsOnlyCoNL(CoNL):
    """CoNL's batches and schedule, trained on lambda * L_CLCS only."""

    step_fn = staticmethod(clcs_only_step)


class OracleSelfTraining(SelfTraining):
    """The ceiling of the self-training stage: the same rows selected, each
    trained on its gold label instead of its pseudo-label (gold read here
    only, to measure what perfect labels would give)."""

    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        gold = self.target.gold
        known = self.selected[gold[self.selected] >= 0]
        self.pred = self.pred.copy()
        self.pred[known] = gold[known]


class PaperStepsCoNL(CoNL):
    """Cause c: joint mode gives one model every language's anchors, about
    n_languages times the updates of the paper's one-model-per-language
    runs. This probe stops CoNL after 1 / n_languages of its steps (the
    schedule sized for those steps), the update count of one per-language run."""

    def __init__(self, model, cfg, *args, **kwargs):
        super().__init__(model, cfg, *args, **kwargs)
        self.max_steps = max(1, super().epoch_steps(0) // max(1, len(cfg.data.target_langs)))
        self.scheduler = linear_warmup_schedule(self.optimizer, self.max_steps * cfg.conl.epochs, 0.0)

    def epoch_steps(self, epoch: int) -> int:
        return min(super().epoch_steps(epoch), self.max_steps)

    def batches(self, epoch: int, first_step: int):
        return islice(super().batches(epoch, first_step), self.max_steps)
