"""The worker side of a training stage -- source fine-tuning, CoNL (Eq. 8)
or self-training (Eq. 12) -- from its typed inputs to its saved model,
written once; the driver side is ``train.py``.

``run_stage(job, session)`` is the stage body: the stage's plain PyTorch
algorithm object (``algorithm/``, picked by name in its registry) over the
token files the driver made, memory-mapped (no worker calls a tokenizer on
corpus rows, and 8 workers on a node share one copy of the ids in the page
cache), in the one step loop with the end-of-epoch hooks
(``training/loop.py``). The ``session`` says where it runs:

* ``RayTrainSession``: a Ray Train worker (``train_loop_per_worker``):
  its device, DDP around the model, checkpoints reported to Ray Train and
  restored from it, and a stop when the driver that started it is gone;
* ``InProcessSession``: this process (one worker without a GPU, a Tune
  trial): a checkpoint file, no Ray Train start-up.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from conlst_ray.algorithm.registry import StageData, build_algorithm
from conlst_ray.config.stages import CONL, SOURCE
from conlst_ray.data.token_files import AlignedRows, TokenRows, open_token_rows
from conlst_ray.models.card import stage_card
from conlst_ray.models.encoder import ConlstEncoder, apply_freezing
from conlst_ray.models.tokenizers import fetch_tokenizer, keep_tokenizer_files, open_tokenizer, tokenizer_stamp
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_bytes
from conlst_ray.training.distributed import world
from conlst_ray.training.loop import (
    Checkpoint,
    EvaluateDev,
    Extra,
    KeepBestEpoch,
    LogMetrics,
    StartAt,
    StepModule,
    WriteThresholds,
    drop_replayed_records,
    run_epochs,
)
from conlst_ray.training.stage_files import StageFiles

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


__all__ = ["StageInputs", "StageJob", "run_stage", "build_stage", "freeze", "train_loop_per_worker",
           "RayTrainSession", "InProcessSession", "DriverWatch", "STATE_FILE", "load_checkpoint", "save_checkpoint",
           "read_stage_data", "read_eval_rows", "attach_frozen"]

STATE_FILE = "train_state.pt"  # in each checkpoint Ray Train keeps


# -- what a stage reads and runs --------------------------------------------------------------

@dataclass(frozen=True)
class StageInputs:
    """What a stage reads besides its starting model."""
    target_corpus: Optional[str] = None     # the sharded unlabelled target rows (CoNL, self-training)
    pseudo_labels: Optional[str] = None     # the source model's q of those rows (CoNL)
    translations: Optional[str] = None      # their back-translations (self-training, when set)
    langs: Optional[list] = None            # target languages read (default: every one in the corpus)
    corpus_dir: Optional[str] = None        # the token cache (fit_stage's default: the run's corpus/)
    # runs before every step, after the session's own check: a test's fault (a raise, a kill at step N)
    before_step: Optional[Callable[[int], None]] = None


@dataclass
class StageJob:
    """One stage as a worker (or this process) runs it."""
    stage: str                               # source | conl | ssl
    config: "Config"                         # validated once by the driver
    model_in: str                            # the model it starts from
    files: StageFiles                        # where it writes (its model, logs, checkpoint)
    tokens: dict = field(default_factory=dict)  # name -> [token folder, languages], from prepare_stage_tokens
    inputs: StageInputs = field(default_factory=StageInputs)


# -- its data: the driver's token files, memory-mapped ------------------------------------------

def read_stage_data(tokens: dict, stamp: str) -> tuple[TokenRows, Optional[TokenRows]]:
    """Source rows (labelled) and target rows (labels hidden: ``gold`` keeps
    them for analysis only, never trained on), memory-mapped; ``tokens``:
    what ``prepare_stage_tokens`` returned."""
    source = open_token_rows(*tokens["source"], expect_stamp=stamp).labelled()
    target = None
    if "target" in tokens:
        target = open_token_rows(*tokens["target"], expect_stamp=stamp)
        target.gold = target.labels.copy()
        target.labels[:] = -1
    return source, target


def read_eval_rows(tokens: dict, stamp: str) -> list[TokenRows]:
    return [open_token_rows(*entry, expect_stamp=stamp) for entry in tokens.get("eval", [])]


def attach_frozen(rows: Optional[TokenRows], entry: list, model, cfg: "Config", device) -> None:
    """model.cache_frozen: give ``rows`` (read from the token folder of
    ``entry`` = [folder, languages]) their states after the frozen layers,
    read from beside the token files or computed there once."""
    if rows is None or not cfg.model.cache_frozen or not len(rows):
        return
    from conlst_ray.storage import mirror as storage
    from conlst_ray.training.frozen_cache import FrozenRun, cached_states

    folder, langs = entry
    run = FrozenRun(cfg.model.freeze_layers, device, cfg.resources.precision, cfg.source.eval_batch_size)
    rows.frozen = cached_states(model, rows, storage.here(folder), run, langs)


def row_positions(ids: pa.ChunkedArray, of: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each id in ``ids``, its row in ``of`` (-1 where absent)."""
    pos = pc.index_in(ids, value_set=of.combine_chunks() if isinstance(of, pa.ChunkedArray) else of)
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def read_q(path: str, ids: pa.ChunkedArray) -> np.ndarray:
    """The pseudo-label distribution q of each target row, in row order."""
    from conlst_ray.ray_jobs.sharded import read_outputs

    table = read_outputs(path)
    pos = row_positions(ids, table.column("id"))
    if (pos < 0).any():
        first = ids.take(pa.array(np.flatnonzero(pos < 0)[:1]))[0].as_py()
        raise ValueError(f"{path}: no pseudo-label for {int((pos < 0).sum())} target rows (e.g. {first})")
    q = table.column("q").combine_chunks()
    return q.flatten().to_numpy().reshape(len(q), -1).astype(np.float32)[pos]


def read_backtranslations(tokens: dict, target: TokenRows, stamp: str) -> Optional[AlignedRows]:
    """Back-translated token ids aligned with ``target`` rows; rows without a
    translation (an uncovered language) keep their own."""
    entry = tokens.get("translations")
    if entry is None:
        return None
    translated = open_token_rows(*entry, expect_stamp=stamp)
    return AlignedRows(translated, target, row_positions(target.ids, translated.ids))


# -- the stage body ----------------------------------------------------------------------------

def freeze(model, cfg: "Config", stage: str) -> dict:
    """The parameters this stage trains (model.freeze_*, conl.train_classifier)."""
    return apply_freezing(model, cfg.model, freeze_classifier=stage == CONL and not cfg.conl.train_classifier)


def stage_algorithm(job: StageJob, model, tokenizer, device, stamp: str):
    """The stage's algorithm object over the token files the driver made."""
    cfg, tokens = job.config, job.tokens
    source, target = read_stage_data(tokens, stamp)
    attach_frozen(source, tokens["source"], model, cfg, device)
    attach_frozen(target, tokens.get("target"), model, cfg, device)
    data = StageData(source, target, pseudo_labels=lambda: read_q(job.inputs.pseudo_labels, target.ids),
                     backtranslations=lambda: read_backtranslations(tokens, target, stamp))
    return build_algorithm(job.stage, model, cfg, tokenizer, device, data)


def build_stage(job: StageJob, device) -> tuple:
    """The stage's model (loaded, frozen as configured, on ``device``, in
    train mode), its tokenizer, the counts of the parameters it trains, the
    tokenizer stamp and the algorithm object over the token files."""
    torch.manual_seed(job.config.seed)
    tokenizer = open_tokenizer(job.model_in)
    model = ConlstEncoder.load(job.model_in)
    frozen = freeze(model, job.config, job.stage)  # before DDP and the optimizer see the parameters
    model.to(device).train()
    # the corpora, tokenised once by the driver's Ray tasks, memory-mapped here
    stamp = tokenizer_stamp(job.model_in, job.config.data.max_length)
    return tokenizer, frozen, stamp, stage_algorithm(job, model, tokenizer, device, stamp)


def run_stage(job: StageJob, session) -> dict:
    """Train ``job``'s stage under ``session`` (device, model wrapping,
    checkpoints) and save its model (rank 0); returns the last epoch's record."""
    cfg = job.config
    rank, _ = world()
    tokenizer, frozen, stamp, algorithm = build_stage(job, session.device)
    model = algorithm.model
    runner = session.wrap(StepModule(model, cfg.resources.precision))
    start, state = StartAt(), session.restore()
    if state is not None:
        algorithm.load_state_dict(state)
        start = StartAt(state["epoch"] + 1, state["step"])
    logs_out = [storage.here(job.files.metrics), storage.here(job.files.steps)] if rank == 0 else []
    for path in logs_out:  # a restarted worker may sit on another node: its records are in storage
        storage.fetch(path)
    if logs_out:
        drop_replayed_records(*logs_out, step=start.step, epoch=start.epoch)
    hooks, best = epoch_hooks(job, algorithm, tokenizer, stamp, state, session, frozen)
    with storage.PublishEvery(logs_out):
        record = run_epochs(algorithm, runner, hooks, start=start, prefetch_depth=cfg.resources.prefetch_batches,
                            steps_file=logs_out[1] if logs_out else None,
                            before_step=_before_step(session, job.inputs.before_step))
    if rank == 0:
        model_out = storage.fetch(job.files.model)  # a kept epoch may have been saved on another node
        if best is None or not best.kept:
            model.save(model_out, tokenizer, card=stage_card(cfg, job.stage, record))
        keep_tokenizer_files(fetch_tokenizer(job.model_in), model_out)  # same stamp: no re-tokenising
        storage.publish(model_out)
    return record


def _before_step(session, fault: Optional[Callable[[int], None]]) -> Callable[[int], None]:
    """What runs before every step: the session's check (a Ray Train worker
    stops when its driver is gone), then the inputs' fault hook if any."""
    def before_step(step: int) -> None:
        session.before_step(step)
        if fault is not None:
            fault(step)
    return before_step


def epoch_hooks(job: StageJob, algorithm, tokenizer, stamp: str, state: Optional[dict], session, frozen: dict):
    """The end-of-epoch hooks of a stage, in order, and its KeepBestEpoch
    (None unless this is rank 0 of a source stage that keeps its best epoch)."""
    cfg, model = job.config, algorithm.model
    rank, _ = world()
    hooks: list = [Extra(frozen, session.device)]
    if getattr(algorithm, "thresholds", None) is not None:
        hooks.append(WriteThresholds(algorithm.thresholds, storage.here(job.files.thresholds)))
    best = None
    if rank == 0:
        if cfg.data.eval_during_training:
            rows = read_eval_rows(job.tokens, stamp)
            for r, entry in zip(rows, job.tokens.get("eval", [])):
                attach_frozen(r, entry, model, cfg, session.device)
            hooks.append(EvaluateDev(model, rows, tokenizer.pad_token_id, cfg, session.device))
        if job.stage == SOURCE and cfg.source.keep_best_epoch:
            best = KeepBestEpoch(model, cfg, job.files.model, tokenizer,
                                 state.get("best_source_dev_acc") if state else None)
            hooks.append(best)
        hooks.append(LogMetrics(storage.here(job.files.metrics), storage.here(job.files.steps)))
    hooks.append(Checkpoint(session, algorithm, best))
    return hooks, best


# -- where it runs: the sessions ----------------------------------------------------------------

class RayTrainSession:
    """The session of a stage under Ray Train (V2); ``watch``: the check
    that the driver still holds the run directory (None: nothing to check)."""

    def __init__(self, watch: Optional["DriverWatch"] = None):
        import ray.train.torch

        self.device = ray.train.torch.get_device()
        self.watch = watch

    def wrap(self, step_module):
        import ray.train.torch

        return ray.train.torch.prepare_model(step_module, parallel_strategy_kwargs={"find_unused_parameters": True})

    def restore(self) -> Optional[dict]:
        return load_checkpoint()

    def report(self, state: dict, record: dict) -> None:
        save_checkpoint(state, record)

    def before_step(self, step: int) -> None:
        if self.watch is not None:
            self.watch(step)


class InProcessSession:
    """A stage trained in this process (one worker, no GPU: no Ray Train):
    the checkpoint is one file, written whole or not at all, and published
    with the run, where a rerun of the stage resumes."""

    def __init__(self, checkpoint: Path, device: torch.device):
        self.checkpoint, self.device = Path(checkpoint), device

    def wrap(self, step_module):
        return step_module

    def restore(self) -> Optional[dict]:
        path = storage.fetch(self.checkpoint)
        # weights_only: a checkpoint is data, never code, whoever wrote the run directory
        return torch.load(path, weights_only=True) if path.is_file() else None

    def report(self, state: dict, record: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())
        storage.publish(self.checkpoint)

    def before_step(self, step: int) -> None:
        pass  # the driver is this process: nothing to watch


def train_loop_per_worker(loop_cfg: dict) -> None:
    """One stage on one Ray Train worker: ``loop_cfg["job"]``, a StageJob;
    ``loop_cfg["lock"]``: the run directory's lock and its holder, the driver
    (the worker stops when the driver is gone: ``DriverWatch``)."""
    watch = None
    if loop_cfg.get("lock"):
        path, holder = loop_cfg["lock"]
        watch = DriverWatch(path, holder, every_s=10.0 if storage.is_remote(path) else 1.0)
    run_stage(loop_cfg["job"], RayTrainSession(watch))


@dataclass
class DriverWatch:
    """Before a step (at most every ``every_s`` seconds): does the command
    that started this worker still hold its run directory's lock? A driver
    killed with kill -9 leaves its workers training until Ray notices (4 s
    here, longer on a loaded cluster), and a prompt --resume takes the lock
    over: the orphan then stops at once, before it writes another step or
    checkpoint (os._exit: the dead driver's Ray Train cannot restart it)."""
    lock: str                    # RUN/.lock
    holder: dict                 # what the driver wrote there
    every_s: float = 1.0
    checked: float = field(default=0.0)

    def __call__(self, step: int) -> None:
        from conlst_ray.storage.lock import lock_lost

        now = time.monotonic()
        if now - self.checked < self.every_s:
            return
        self.checked = now
        why = lock_lost(Path(self.lock), self.holder)
        if why:
            print(f"[worker] stopping before step {step}: {why}", file=sys.stderr, flush=True)
            os._exit(3)


def save_checkpoint(state: dict, metrics: dict) -> None:
    """Report metrics from every worker; rank 0 attaches the checkpoint."""
    import ray.train

    rank, _ = world()
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def load_checkpoint() -> Optional[dict]:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        # weights_only: a checkpoint is data, never code, whoever wrote the run directory
        return torch.load(Path(d) / STATE_FILE, weights_only=True)

