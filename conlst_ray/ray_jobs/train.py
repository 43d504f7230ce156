"""The driver side of a training stage: tokenise what it reads, then train
it in this process (one worker without a GPU: ``stage_run.in_process``) or
under Ray Train (V2): a ``TorchTrainer`` whose workers run the same stage
body (``stage_run.run_stage``) with DDP (gloo on CPU, NCCL on GPU), report a
checkpoint every epoch (an SSL iteration counts as one) and, restarted,
resume from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from conlst_ray.config.keys import get
from conlst_ray.config.stages import BY_NAME
from conlst_ray.ray_jobs.progress import StageWatcher
from conlst_ray.ray_jobs.stage_data import prepare_stage_tokens
from conlst_ray.ray_jobs.stage_run import (
    StageInputs,
    StageJob,
    fit_plain,
    freeze,
    in_process,
    run_in_process,
    run_stage,
)
from conlst_ray.storage import mirror as storage
from conlst_ray.training.stage_files import StageFiles

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


__all__ = ["fit_stage", "train_loop_per_worker", "freeze", "fit_plain"]


def train_loop_per_worker(loop_cfg: dict) -> None:
    """One stage on one Ray Train worker: ``loop_cfg["job"]``, a StageJob;
    ``loop_cfg["lock"]``: the run directory's lock and its holder, the driver
    (the worker stops when the driver is gone: ``worker.DriverWatch``)."""
    from conlst_ray.ray_jobs.worker import DriverWatch, RayTrainSession

    job = loop_cfg["job"]
    if loop_cfg.get("lock"):
        path, holder = loop_cfg["lock"]
        watch = DriverWatch(path, holder, every_s=10.0 if storage.is_remote(path) else 1.0)
        seam = job.inputs.before_step
        job = replace(job, inputs=replace(job.inputs, before_step=lambda step: (watch(step), seam and seam(step))))
    run_stage(job, RayTrainSession())


# -- the driver ------------------------------------------------------------------------------

def fit_stage(stage: str, cfg: "Config", files: StageFiles, model_in: str, inputs: Optional[StageInputs] = None,
              num_workers: Optional[int] = None, log=print) -> dict:
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
    tokens = prepare_stage_tokens(stage, cfg, str(model_in), inputs, log)
    job = StageJob(stage, cfg, str(model_in), files, tokens, inputs)
    key = BY_NAME[stage].epochs_key  # its passes (config/stages.py); one for a stage without the key
    epochs = get(cfg, key) if key else 1
    with StageWatcher(files, stage, epochs, log=log):  # progress lines and TensorBoard, in the driver
        if in_process(cfg, workers):
            return run_in_process(job)
        return _fit_ray_train(job, workers)


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
