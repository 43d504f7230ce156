"""One training stage -- source fine-tuning, CoNL (Eq. 8) or self-training
(Eq. 12) -- from its typed inputs to its saved model, written once.

``run_stage(job, session)`` is the body: the stage's plain PyTorch
algorithm object (``algorithm/``) over the token files the driver made, in
the one step loop with the end-of-epoch hooks (``training/epoch_hooks``).
The ``session`` says where it runs: a Ray Train worker (checkpoints reported
to Ray Train, DDP) or this process (``InProcessSession``: a checkpoint file,
no Ray Train start-up), which is how one-worker CPU stages and Tune trials run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from conlst_ray.algorithm.registry import StageData, build_algorithm
from conlst_ray.models.card import stage_card
from conlst_ray.models.encoder import ConlstEncoder, apply_freezing
from conlst_ray.models.tokenizers import fetch_tokenizer, keep_tokenizer_files, open_tokenizer, tokenizer_stamp
from conlst_ray.ray_jobs.stage_data import (
    StageInputs,
    attach_frozen,
    prepare_stage_tokens,
    read_backtranslations,
    read_eval_rows,
    read_q,
    read_stage_data,
)
from conlst_ray.storage import mirror as storage
from conlst_ray.training.distributed import world
from conlst_ray.training.epoch_hooks import (
    Checkpoint,
    EvaluateDev,
    Extra,
    InProcessSession,
    KeepBestEpoch,
    LogMetrics,
    WriteThresholds,
    drop_replayed_records,
    run_epochs,
)
from conlst_ray.training.loop import StepModule
from conlst_ray.training.stage_files import StageFiles

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


__all__ = ["StageJob", "run_stage", "fit_plain", "freeze"]


@dataclass
class StageJob:
    """One stage as a worker (or this process) runs it."""
    stage: str                               # source | conl | ssl
    config: object                           # the Config, validated once by the driver
    model_in: str                            # the model it starts from
    files: StageFiles                        # where it writes (its model, logs, checkpoint)
    tokens: dict = field(default_factory=dict)  # name -> [token folder, languages], from prepare_stage_tokens
    inputs: StageInputs = field(default_factory=StageInputs)


def freeze(model, cfg: "Config", stage: str) -> dict:
    """The parameters this stage trains (model.freeze_*, conl.train_classifier)."""
    return apply_freezing(model, cfg.model, freeze_classifier=stage == "conl" and not cfg.conl.train_classifier)


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
    start, state = (0, 0), session.restore()
    if state is not None:
        algorithm.load_state_dict(state)
        start = (state["epoch"] + 1, state["step"])
    logs_out = [storage.here(job.files.metrics), storage.here(job.files.steps)] if rank == 0 else []
    for path in logs_out:  # a restarted worker may sit on another node: its records are in storage
        storage.fetch(path)
    if logs_out:
        drop_replayed_records(tuple(logs_out), start[1], start[0])
    hooks, best = epoch_hooks(job, algorithm, tokenizer, stamp, state, session, frozen)
    with storage.PublishEvery(logs_out):
        record = run_epochs(algorithm, runner, hooks, start=start, prefetch_depth=cfg.resources.prefetch_batches,
                            steps_file=logs_out[1] if logs_out else None, before_step=job.inputs.before_step)
    if rank == 0:
        model_out = storage.fetch(job.files.model)  # a kept epoch may have been saved on another node
        if best is None or not best.kept:
            model.save(model_out, tokenizer, card=stage_card(cfg, job.stage, record))
        keep_tokenizer_files(fetch_tokenizer(job.model_in), model_out)  # same stamp: no re-tokenising
        storage.publish(model_out)
    return record


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
        if job.stage == "source" and cfg.source.keep_best_epoch:
            best = KeepBestEpoch(model, cfg, job.files.model, tokenizer,
                                 state.get("best_source_dev_acc") if state else None)
            hooks.append(best)
        hooks.append(LogMetrics(storage.here(job.files.metrics), storage.here(job.files.steps)))
    hooks.append(Checkpoint(session, algorithm, best))
    return hooks, best


def in_process(cfg: "Config", workers: int) -> bool:
    """Whether a stage runs in this process rather than under Ray Train: no
    worker asked for, or (resources.trainer=auto) one worker without a GPU,
    where Ray Train's start-up (25-30 s on 2 cores) buys no parallelism."""
    res = cfg.resources
    return workers == 0 or (workers == 1 and not res.use_gpu and res.trainer == "auto")


def run_in_process(job: StageJob) -> dict:
    """``run_stage`` in this process, with ``resources.cpus_per_worker``
    threads and the checkpoint in ``job.files.checkpoint``."""
    cfg = job.config
    device = in_process_device(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))  # as Ray Train sets a worker's
    try:
        return run_stage(job, InProcessSession(storage.here(job.files.checkpoint), device))
    finally:
        torch.set_num_threads(threads)


def in_process_device(cfg: "Config") -> torch.device:
    return torch.device("cuda" if cfg.resources.use_gpu and torch.cuda.is_available() else "cpu")


def fit_plain(stage: str, cfg: "Config", model_in: str, corpus_dir: Path, inputs: Optional[StageInputs] = None,
              device="cpu", steps_file: Optional[Path] = None):
    """The same stage in this process, with no hook but the steps file (the
    benchmarks' plain loop). Reads the token files the Ray stages made
    (tokenises what is missing). Returns the trained algorithm object."""
    from conlst_ray.training.loop import fit

    inputs = replace(inputs or StageInputs(), corpus_dir=str(corpus_dir), translations=None)
    tokens = prepare_stage_tokens(stage, cfg, model_in, inputs, log=lambda *_: None)
    *_, algorithm = build_stage(StageJob(stage, cfg, model_in, None, tokens, inputs), torch.device(device))
    runner = StepModule(algorithm.model, cfg.resources.precision)
    for _ in fit(algorithm, runner, prefetch_depth=cfg.resources.prefetch_batches, steps_file=steps_file):
        pass
    return algorithm
