"""The driver side of a training stage: tokenise everything it reads, then
train it in this process (one worker without a GPU: ``in_process``) or under
Ray Train (V2): a ``TorchTrainer`` whose workers run the same stage body
(``worker.run_stage``) with DDP (gloo on CPU, NCCL on GPU), report a
checkpoint every epoch (an SSL iteration counts as one) and, restarted,
resume from ``ray.train.get_checkpoint()``.

Every corpus a stage reads -- labelled source rows, the unlabelled target
rows, their back-translations, the dev sets of the per-epoch evaluation --
is sharded into the corpus cache and tokenised by Ray tasks into
memory-mapped Arrow files (``tokens.py``) before the trainer starts; all of
it cached, so the stages of a run and the per-language sub-runs share one
tokenisation.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from conlst_ray import quiet
from conlst_ray.config.keys import get
from conlst_ray.config.provenance import read_json
from conlst_ray.config.stages import BACKTRANSLATION, BY_NAME
from conlst_ray.data.corpora import CORPUS_FOLDERS
from conlst_ray.ray_jobs.progress import StageWatcher
from conlst_ray.ray_jobs.worker import (
    InProcessSession,
    StageInputs,
    StageJob,
    build_stage,
    run_stage,
    train_loop_per_worker,
)
from conlst_ray.storage import mirror as storage
from conlst_ray.training.loop import StepModule
from conlst_ray.training.stage_files import StageFiles

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


__all__ = ["fit_stage", "fit_plain", "prepare_stage_tokens", "in_process"]


# -- what the stage reads, tokenised once ------------------------------------------------------

def _cached_tokens(key: str, cfg: "Config", corpus_dir: Path, tokenizer_dir: str) -> list:
    """The corpus of config key ``key``, sharded into its cache folder and
    tokenised (both cached); [token folder, languages]."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus

    root = corpus_dir / CORPUS_FOLDERS[key]
    manifests = ingest_corpora(get(cfg, key), cfg.data.corpus_langs(key), root, cfg.data, cfg.resources.cpus_per_task,
                               max_rows=cfg.data.corpus_max_rows(key))
    tokens = tokenize_cached_corpus(root, manifests, tokenizer_dir, cfg.data.max_length,
                                    cfg.resources.cpus_per_task)
    return [str(tokens), list(manifests)]


def prepare_stage_tokens(stage: str, cfg: "Config", tokenizer_dir: str, inputs: StageInputs) -> dict:
    """Tokenise (or find tokenised) everything ``stage`` reads, cached under
    ``inputs.corpus_dir``; returns name -> [token folder, languages]."""
    from conlst_ray.ray_jobs.corpus_cache import read_manifest
    from conlst_ray.ray_jobs.sharded import PROVENANCE
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus, tokenize_corpus

    d, corpus_dir = cfg.data, Path(inputs.corpus_dir)
    target_corpus, translations, langs = inputs.target_corpus, inputs.translations, inputs.langs
    out = {"source": _cached_tokens("data.source_train", cfg, corpus_dir, tokenizer_dir)}
    if target_corpus:
        root = Path(target_corpus)
        t_langs = sorted(langs or [p.name[5:] for p in root.glob("lang=*")])
        manifests = {lang: read_manifest(root, lang) or {} for lang in t_langs}
        out["target"] = [str(tokenize_cached_corpus(root, manifests, tokenizer_dir, d.max_length,
                                                    cfg.resources.cpus_per_task)), t_langs]
    if BACKTRANSLATION in BY_NAME[stage].reads and translations and cfg.ssl.use_backtranslation:
        root = Path(translations)
        bt_langs = sorted(p.name[5:] for p in root.glob("lang=*") if any(p.glob("shard-*.parquet")))
        if bt_langs:
            made_from = {lang: read_json(root / f"lang={lang}" / PROVENANCE) for lang in bt_langs}
            out["translations"] = [str(tokenize_corpus(root, bt_langs, tokenizer_dir, d.max_length, made_from,
                                                       cfg.resources.cpus_per_task)), bt_langs]
    if d.eval_during_training:
        out["eval"] = [_cached_tokens(key, cfg, corpus_dir, tokenizer_dir)
                       for key in ("data.source_dev", "data.target_dev") if get(cfg, key)]
    return out


# -- the stage -------------------------------------------------------------------------------

def fit_stage(stage: str, cfg: "Config", files: StageFiles, model_in: str, inputs: Optional[StageInputs] = None,
              num_workers: Optional[int] = None) -> dict:
    """Train one stage; the trained model lands in ``files.model``
    (``pipeline/rundir.stage_files`` names a stage's files). Every corpus the
    stage reads is tokenised first (Ray tasks, cached under
    ``inputs.corpus_dir``, default ``files.corpus``). ``num_workers``
    overrides resources.num_workers. Returns the last epoch's metrics."""
    files = StageFiles(**{f.name: Path(getattr(files, f.name)).resolve() for f in fields(StageFiles)})
    files.root.mkdir(parents=True, exist_ok=True)
    workers = cfg.resources.num_workers if num_workers is None else num_workers
    inputs = inputs or StageInputs()
    inputs = replace(inputs, corpus_dir=str(inputs.corpus_dir or files.corpus))
    tokens = prepare_stage_tokens(stage, cfg, str(model_in), inputs)
    job = StageJob(stage, cfg, str(model_in), files, tokens, inputs)
    key = BY_NAME[stage].epochs_key  # its passes (config/stages.py); one for a stage without the key
    epochs = get(cfg, key) if key else 1
    with StageWatcher(files, stage, epochs):  # progress lines and TensorBoard, in the driver
        if in_process(cfg, workers):
            return run_in_process(job)
        return _fit_ray_train(job, workers)


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


def _fit_ray_train(job: StageJob, workers: int) -> dict:
    import ray.train

    res, files = job.config.resources, job.files
    scaling = ray.train.ScalingConfig(num_workers=workers, use_gpu=res.use_gpu,
                                      resources_per_worker={"CPU": res.cpus_per_worker})
    # Same name + storage path: a rerun of an interrupted stage resumes from its last checkpoint.
    # With object storage the checkpoints live there, where a restarted worker on any node finds them.
    where = storage.remote(files.ray_train)
    run_config = ray.train.RunConfig(name=f"{files.root.parent.name}-{files.root.name}",
                                     storage_path=where[1] if where else str(files.ray_train),
                                     storage_filesystem=where[0] if where else None,
                                     failure_config=ray.train.FailureConfig(max_failures=res.max_failures))
    from conlst_ray.storage.lock import covering_lock

    lock = covering_lock(files.root)
    trainer = _trainer_class()(train_loop_per_worker, scaling_config=scaling, run_config=run_config,
                               train_loop_config={"job": job, "lock": lock and (str(lock[0]), lock[1])})
    return dict(fit_interruptibly(trainer).metrics or {})


def _trainer_class():
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        """A TorchTrainer whose Ctrl+C aborts the run and then reaches the
        caller as KeyboardInterrupt. Ray Train's own handler aborts the run
        but stays installed after ``fit`` returns, so every later Ctrl+C (in
        pseudo-labelling, in the next stage) was swallowed."""
        interrupted = False

        def _register_sigint_handler(self, controller):
            def on_sigint(signum, frame):
                if self.interrupted:  # a second Ctrl+C: stop waiting for the abort
                    raise KeyboardInterrupt
                self.interrupted = True
                controller.abort.remote()

            signal.signal(signal.SIGINT, on_sigint)

    return Trainer


def fit_interruptibly(trainer):
    """``trainer.fit()`` with the caller's SIGINT handler back afterwards;
    an aborted run raises KeyboardInterrupt (the run directory says where to
    resume), whatever Ray Train returned or raised for it."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        result = trainer.fit()
    except BaseException:
        if getattr(trainer, "interrupted", False):
            raise KeyboardInterrupt from None
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if getattr(trainer, "interrupted", False):
        raise KeyboardInterrupt
    return result


def fit_plain(stage: str, cfg: "Config", model_in: str, corpus_dir: Path, inputs: Optional[StageInputs] = None,
              device="cpu", steps_file: Optional[Path] = None):
    """The same stage in this process, with no hook but the steps file (the
    benchmarks' plain loop). Reads the token files the Ray stages made
    (tokenises what is missing). Returns the trained algorithm object."""
    from conlst_ray.training.loop import fit

    inputs = replace(inputs or StageInputs(), corpus_dir=str(corpus_dir), translations=None)
    with quiet():  # the token files are there already: the Ray stages made them and said so
        tokens = prepare_stage_tokens(stage, cfg, model_in, inputs)
    *_, algorithm = build_stage(StageJob(stage, cfg, model_in, None, tokens, inputs), torch.device(device))
    runner = StepModule(algorithm.model, cfg.resources.precision)
    for _ in fit(algorithm, runner, prefetch_depth=cfg.resources.prefetch_batches, steps_file=steps_file):
        pass
    return algorithm

