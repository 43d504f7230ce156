"""One plain-PyTorch object per stage, in the shape of USB's AlgorithmBase:
``begin_epoch`` / ``batches`` / ``train_step`` / ``end_epoch`` /
``state_dict``. The object owns what its stage needs across steps (the
optimizer and schedule, CoNL's negative pool and gamma, self-training's
thresholds, the random state); ``training.loop.fit`` runs it, under Ray
Train on each worker (``ray_jobs/worker.py`` only wires device, DDP,
checkpoints and reports) and without Ray in tests and benchmarks. A variant
of the method is a small subclass.

Data parallelism: every worker builds the same *global* batch plan from the
seed (row order, complementary labels, negatives) and takes its slice
(``training.distributed``), so 1 or N workers see the same global batches
and run the same number of steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from conlst_ray.algorithm.losses import supervised_loss
from conlst_ray.algorithm.registry import StageData, register
from conlst_ray.training.batches import batch_of, to_device
from conlst_ray.training.distributed import global_plan, micro_batches, my_slice
from conlst_ray.training.loop import accumulated_step, rng_state, set_rng_state
from conlst_ray.training.optim import linear_warmup_schedule, make_optimizer

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


# -- one step: a batch and the model in, (loss, logs) out ---------------------------------------

def source_step(model, batch: dict, labels: torch.Tensor):
    """Source fine-tuning: cross-entropy on labelled source rows (Eq. 13's form)."""
    loss = supervised_loss(model(**batch), labels)
    return loss, {"loss": loss.item()}


# -- the stage ---------------------------------------------------------------------------------

class StageAlgorithm:
    """What every stage shares: the model, its optimizer and schedule, the
    labelled source rows, and the step (one optimizer step over the
    micro-batches of a batch). Subclasses say which batches an epoch has."""

    name = ""             # the stage in records and checkpoints
    epoch_key = "epoch"   # how steps.jsonl tags an epoch

    def __init__(self, model, cfg: "Config", tokenizer, device, source, target=None):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_token_id
        self.source, self.target = source, target
        self.optimizer = make_optimizer(model, self.stage_cfg.lr, getattr(self.stage_cfg, "weight_decay", 0.0),
                                        getattr(self.stage_cfg, "optimizer", "adamw"))
        self.scheduler = None
        self.max_grad_norm = 1.0

    @property
    def stage_cfg(self):
        return getattr(self.cfg, self.name)

    @property
    def epochs(self) -> int:
        return self.stage_cfg.epochs

    @classmethod
    def from_stage_data(cls, model, cfg: "Config", tokenizer, device, data: StageData) -> "StageAlgorithm":
        """The algorithm over what its stage reads (algorithm/registry.py);
        a stage that reads more says so in its own."""
        return cls(model, cfg, tokenizer, device, data.source, data.target)

    def begin_epoch(self, epoch: int) -> None:
        """Work done once per epoch before its steps (nothing by default)."""

    def epoch_steps(self, epoch: int) -> int | None:
        """Optimizer steps this epoch will run (known after ``begin_epoch``;
        the progress line's total), or None when unknown."""
        return None

    def batches(self, epoch: int, first_step: int) -> Iterator[list]:
        """Each step's micro-batches [(step_fn, args, weight)], on the device;
        built ahead of the step by a background thread, in order."""
        raise NotImplementedError

    def train_step(self, runner, parts: list) -> dict:
        return accumulated_step(runner, self.model, parts, self.optimizer, self.scheduler, self.max_grad_norm)

    def end_epoch(self, epoch: int) -> dict:
        """The epoch's own logs, next to the means of the step logs."""
        return {}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])

    def plan(self, n: int, batch_size: int, epoch: int, lengths=None) -> list:
        """The epoch's global batches of ``n`` rows, bucketed by ``lengths``
        under resources.length_buckets."""
        bucketed = self.cfg.resources.length_buckets and lengths is not None
        return global_plan(n, batch_size, self.cfg.seed, epoch, lengths if bucketed else None)

    def labelled_batch(self, index: np.ndarray) -> tuple[dict, torch.Tensor]:
        """Source rows ``index`` padded and on the device, with their labels."""
        return (to_device(batch_of(self.source, index, self.pad_id), self.device),
                torch.as_tensor(self.source.labels[index]).to(self.device))


@register("source")
class SourceTraining(StageAlgorithm):
    """Stage 0: cross-entropy fine-tuning on the labelled source rows."""

    def __init__(self, model, cfg: "Config", tokenizer, device, source, target=None):
        super().__init__(model, cfg, tokenizer, device, source, target)
        c = cfg.source
        self.max_grad_norm = c.max_grad_norm
        total = (len(source) // c.batch_size) * c.epochs
        self.scheduler = linear_warmup_schedule(self.optimizer, max(1, total), c.warmup_ratio)

    def epoch_steps(self, epoch: int) -> int:
        return len(self.source) // self.cfg.source.batch_size  # full global batches only

    def batches(self, epoch: int, first_step: int) -> Iterator[list]:
        c = self.cfg.source
        for gbatch in self.plan(len(self.source), c.batch_size, epoch, self.source.lengths()):
            idx = my_slice(gbatch)
            yield [(source_step, self.labelled_batch(part), len(part) / len(idx))
                   for part in micro_batches(idx, c.grad_accum, "source.grad_accum")]
