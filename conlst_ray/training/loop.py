"""The step loop, written once, and what follows each epoch.

Every stage's algorithm object (the shape of USB's AlgorithmBase, see
``algorithm/base.py``) runs through ``fit``: on each Ray Train worker, in
this process, and in the plain loops of tests and benchmarks. Per epoch:
``begin_epoch`` (pools, pseudo-labels, thresholds), then its ``batches``
prepared ahead by a background thread (``prefetch``), one ``train_step`` per
batch (an optimizer step over micro-batches), one record per step in
steps.jsonl, and ``end_epoch``'s logs with the epoch means.

``run_epochs`` follows each epoch (an SSL iteration counts as one) with
hooks, in the manner of USB's: write the thresholds applied, score the dev
sets, keep the best source epoch, log the epoch's record, checkpoint. A hook
is any object with ``after_epoch(epoch, step, record)``; it may add to
``record`` (the epoch's metrics), which the hooks after it see. The stage
body (``ray_jobs/worker.run_stage``) and the study's harness pick the hooks
they need.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Optional, Protocol

import numpy as np
import torch
from torch import nn

from conlst_ray.config.stages import SOURCE
from conlst_ray.models.card import stage_card
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text
from conlst_ray.training.batches import prefetch
from conlst_ray.training.distributed import all_mean, world
from conlst_ray.training.inference import autocast, dev_metrics

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


class StepModule(nn.Module):
    """Runs one algorithm step in ``forward`` so DDP can wrap it, under the
    configured precision (``resources.precision``). Unwrapped, it is the
    plain loop's runner."""

    def __init__(self, model: nn.Module, precision: str = "auto"):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, step_fn, *args):
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            return step_fn(self.model, *args)


def accumulated_step(runner, model, parts: list, optimizer, scheduler, max_norm: float = 1.0) -> dict:
    """One optimizer step over micro-batches ``parts`` = [(step_fn, args,
    weight)], weight = the part's share of the worker's rows: the summed
    gradient is the whole batch's (a part's loss is a mean over its rows).
    DDP all-reduces on the last part only. Returns the logs, weighted alike
    (a term some parts lack is averaged over the parts that have it)."""
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for j, (step_fn, args, weight) in enumerate(parts):
        last = j == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(runner, "no_sync") else runner.no_sync():
            loss, logs = runner(step_fn, *args)
            (loss * weight).backward()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + weight * v
            weights[k] = weights.get(k, 0.0) + weight
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return {k: v / weights[k] for k, v in sums.items()}


def fit(algorithm, runner, *, start_epoch: int = 0, step: int = 0, prefetch_depth: int = 2,
        steps_file: Optional[Path] = None,
        before_step: Optional[Callable[[int], None]] = None) -> Iterator[tuple[int, int, dict]]:
    """Run ``algorithm`` from ``start_epoch`` (optimizer step ``step``) to its
    last epoch; yields (epoch, step, epoch logs) after each epoch, where the
    caller checkpoints. ``runner`` calls a step function on the model: the
    DDP-wrapped ``StepModule`` under Ray Train, a bare one in a plain loop.
    ``steps_file``: where the per-step records go (rank 0 only).
    ``before_step``: called with the step number before every step (a
    worker's check that its driver is alive; a test's fault)."""
    for epoch in range(start_epoch, algorithm.epochs):
        algorithm.begin_epoch(epoch)
        total = algorithm.epoch_steps(epoch)
        sums: dict[str, list] = {}
        for parts in prefetch(algorithm.batches(epoch, step), prefetch_depth):
            if before_step is not None:
                before_step(step)
            logs = algorithm.train_step(runner, parts)
            step += 1
            record_step(sums, steps_file, logs, stage=algorithm.name, **{algorithm.epoch_key: epoch}, step=step,
                        epoch_steps=total)
        yield epoch, step, {**epoch_means(sums), **algorithm.end_epoch(epoch)}


def record_step(sums: dict, steps_file: Optional[Path], logs: dict, **tags) -> None:
    """Average a step's log terms over the workers, keep them for the epoch
    means, and append them to ``steps_file`` with a timestamp."""
    record = {k: all_mean(v) for k, v in logs.items()}
    for k, v in record.items():
        sums.setdefault(k, []).append(v)
    if steps_file is not None:
        append_jsonl(steps_file, {**tags, **record, "time": time.time()})


def epoch_means(sums: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in sums.items()}


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def rng_state() -> dict:
    """RNG states as tensors and plain numbers, so that the checkpoint loads
    with ``weights_only=True`` (numpy's state tuple holds an ndarray)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


# -- what follows each epoch ------------------------------------------------------------------

class EpochHook(Protocol):
    def after_epoch(self, epoch: int, step: int, record: dict) -> None: ...


class StartAt(NamedTuple):
    """Where a stage (re)starts: its first epoch and the optimizer steps done
    before it (a restored checkpoint's, or none)."""
    epoch: int = 0
    step: int = 0


FROM_THE_START = StartAt()


def run_epochs(algorithm, runner, hooks: Iterable[EpochHook], *, start: StartAt = FROM_THE_START,
               prefetch_depth: int = 2,
               steps_file: Optional[Path] = None, before_step: Optional[Callable[[int], None]] = None) -> dict:
    """The algorithm's epochs from ``start``, each followed by the hooks in
    order; returns the last epoch's record."""
    hooks, record = list(hooks), {}
    for epoch, step, logs in fit(algorithm, runner, start_epoch=start.epoch, step=start.step,
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
            self.model.save(self.out, self.tokenizer, card=stage_card(self.cfg, SOURCE, record))
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


def drop_replayed_records(metrics: Path, steps: Path, step: int, epoch: int) -> None:
    """On (re)start, keep only the records the restored checkpoint covers:
    in ``metrics``, epochs before ``epoch``; in ``steps``, steps up to
    ``step``. The steps after the checkpoint run again and would otherwise be
    logged twice. A line cut short (a log uploaded to object
    storage while it was being written, then the worker died) is dropped too."""
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
