"""What happens at the end of each epoch (an SSL iteration counts as one),
as hooks on the one step loop, in the manner of USB's hooks: write the
thresholds applied, score the dev sets, keep the best source epoch, log
the epoch's record, checkpoint. The stage body (``ray_jobs/worker.run_stage``)
and the study's harness pick the hooks they need from this one list.

A hook is any object with ``after_epoch(epoch, step, record)``; it may add
to ``record`` (the epoch's metrics), which the hooks after it see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Protocol

import torch

from conlst_ray.models.card import stage_card
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text
from conlst_ray.training.distributed import world
from conlst_ray.training.inference import dev_metrics
from conlst_ray.training.loop import append_jsonl, fit

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


class EpochHook(Protocol):
    def after_epoch(self, epoch: int, step: int, record: dict) -> None: ...


def run_epochs(algorithm, runner, hooks: Iterable[EpochHook], *, start=(0, 0), prefetch_depth: int = 2,
               steps_file: Optional[Path] = None, before_step: Optional[Callable[[int], None]] = None) -> dict:
    """The algorithm's epochs from ``start`` = (epoch, optimizer step), each
    followed by the hooks in order; returns the last epoch's record."""
    hooks, record = list(hooks), {}
    for epoch, step, logs in fit(algorithm, runner, start_epoch=start[0], step=start[1],
                                 prefetch_depth=prefetch_depth, steps_file=steps_file, before_step=before_step):
        record = {"stage": algorithm.name, "epoch": epoch, "step": step, **logs}
        for hook in hooks:
            hook.after_epoch(epoch, step, record)
    return record


class Extra:
    """Fixed entries every record carries (the trainable-parameter counts), and
    the GPU's peak memory."""

    def __init__(self, entries: dict, device: torch.device):
        self.entries, self.device = entries, device

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        ordered = {k: record.pop(k) for k in ("stage", "epoch", "step")}
        rest = dict(record)
        record.clear()
        record.update({**ordered, **self.entries, **rest})  # the logs win over a fixed entry of the same name
        if self.device.type == "cuda":
            record["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30


class WriteThresholds:
    """Every worker writes the per-class thresholds it applied (they must
    agree): ``folder/iter{epoch}.rank{rank}.json``."""

    def __init__(self, thresholds, folder: Path):
        self.thresholds, self.folder = thresholds, folder

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        rank, _ = world()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"iter{epoch}.rank{rank}.json"
        path.write_text(json.dumps(self.thresholds.thresholds().tolist()))
        storage.publish(path)


class EvaluateDev:
    """Dev accuracy per language (``acc_xx``, ``source_dev_acc``,
    ``target_dev_acc``) on the worker's device; the model goes back to
    train mode."""

    def __init__(self, model, rows: list, pad_id: int, cfg: "Config", device):
        self.model, self.rows, self.pad_id, self.cfg, self.device = model, rows, pad_id, cfg, device

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        record.update(dev_metrics(self.model, self.rows, self.pad_id, self.device, self.cfg))


class KeepBestEpoch:
    """``source.keep_best_epoch``: the source stage's model is the epoch with
    the best source dev accuracy (no target label read), saved to ``out``
    when it is reached; otherwise nothing is kept here and the caller saves
    the last epoch's."""

    def __init__(self, model, cfg: "Config", out, tokenizer, restored_acc: Optional[float] = None):
        self.model, self.cfg, self.out, self.tokenizer = model, cfg, out, tokenizer
        self.acc = restored_acc
        self.kept = restored_acc is not None  # a restarted run kept one already

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        acc = record.get("source_dev_acc")
        if acc is None:
            return
        if self.acc is None or acc > self.acc:
            self.acc, self.kept = acc, True
            record["kept_epoch"] = epoch
            self.model.save(self.out, self.tokenizer, card=stage_card(self.cfg, "source", record))
            storage.publish(self.out)
        record["best_source_dev_acc"] = self.acc


class LogMetrics:
    """Append the epoch's record to the metrics file and publish it and the
    steps file (object storage: a restarted worker elsewhere reads them)."""

    def __init__(self, metrics: Path, steps: Path):
        self.paths = (metrics, steps)

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        append_jsonl(self.paths[0], record)
        for path in self.paths:
            storage.publish(path)


class Checkpoint:
    """The algorithm's state (model, optimizer, schedule, thresholds, RNG),
    the step and the kept epoch's accuracy, handed to ``session.report``."""

    def __init__(self, session, algorithm, best: Optional[KeepBestEpoch]):
        self.session, self.algorithm, self.best = session, algorithm, best

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        state = {**self.algorithm.state_dict(), "step": step, "epoch": epoch,
                 "best_source_dev_acc": self.best.acc if self.best else None}
        self.session.report(state, record)


def drop_replayed_records(logs: tuple[Path, Path], step: int, epoch: int) -> None:
    """On (re)start, keep only the records the restored checkpoint covers:
    in ``logs`` = (metrics file, steps file), epochs before ``epoch`` and
    steps up to ``step``. The steps after the checkpoint run again and would
    otherwise be logged twice. A line cut short (a log uploaded to object
    storage while it was being written, then the worker died) is dropped too."""
    metrics, steps = logs
    for path, keep in ((steps, lambda r: r.get("step", 0) <= step),
                       (metrics, lambda r: r.get("epoch", -1) < epoch)):
        if not path.is_file():
            continue
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if _whole(line) and keep(json.loads(line))]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def _whole(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
