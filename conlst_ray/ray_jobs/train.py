"""Ray Train (V2) wiring of the three stages: source fine-tuning, CoNL
(Eq. 8) and self-training (Eq. 12). The algorithm is the stage's plain
PyTorch object (``algorithm/``) run by the one step loop
(``training.loop.fit``); this module only gives it a device, wraps it for
DDP (gloo on CPU, NCCL on GPU) through ``ray.train.torch.prepare_model``,
restores and reports checkpoints, and writes the per-epoch metrics.

A checkpoint (the algorithm's state: model, optimizer, schedule, thresholds,
RNG; plus the step) is reported every epoch (an SSL iteration counts as one);
a restarted worker group resumes from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Callable, Optional

import torch

from conlst_ray.algorithm.base import SourceTraining
from conlst_ray.algorithm.conl import CoNL
from conlst_ray.algorithm.self_training import SelfTraining
from conlst_ray.models.card import stage_card
from conlst_ray.models.encoder import ConlstEncoder, apply_freezing
from conlst_ray.ray_jobs.stage_data import (attach_frozen, prepare_stage_tokens, read_backtranslations, read_eval_rows,
                                            read_q, read_stage_data)
from conlst_ray.ray_jobs.worker import drop_replayed_records, load_checkpoint, save_checkpoint, write_thresholds
from conlst_ray.data import storage
from conlst_ray.data.token_files import fetch_tokenizer, keep_tokenizer_files, tokenizer_stamp
from conlst_ray.training.distributed import world
from conlst_ray.training.inference import dev_metrics
from conlst_ray.training.loop import StepModule, append_jsonl, fit
from conlst_ray.training.progress import StageWatcher

__all__ = ["fit_stage", "train_loop_per_worker"]


def stage_algorithm(stage: str, model, cfg, tokenizer, device, loop_cfg: dict, stamp: str):
    """The stage's algorithm object over the token files the driver made."""
    source, target = read_stage_data(loop_cfg, stamp)
    tokens = loop_cfg["tokens"]
    attach_frozen(source, tokens["source"], model, cfg, device)
    attach_frozen(target, tokens.get("target"), model, cfg, device)
    if stage == "source":
        return SourceTraining(model, cfg, tokenizer, device, source)
    if stage == "conl":
        return CoNL(model, cfg, tokenizer, device, source, target, read_q(loop_cfg["pseudo_labels"], target.ids))
    backtranslated = read_backtranslations(loop_cfg, target, stamp) if cfg.ssl.use_backtranslation else None
    return SelfTraining(model, cfg, tokenizer, device, source, target, backtranslated)


def freeze(model, cfg, stage: str) -> dict:
    """The parameters this stage trains (model.freeze_*, conl.train_classifier)."""
    return apply_freezing(model, cfg.model, freeze_classifier=stage == "conl" and not cfg.conl.train_classifier)


def train_loop_per_worker(loop_cfg: dict) -> None:
    """One stage on one worker. ``loop_cfg``: stage, config (the Config object),
    model_in, model_out, target_corpus, pseudo_labels, translations,
    metrics_file, tokens, step_hook (a test's seam, else None)."""
    import ray.train.torch
    from conlst_ray.data.token_files import open_tokenizer

    cfg = loop_cfg["config"]  # the config object itself: validated once, in the driver
    torch.manual_seed(cfg.seed)
    rank, _ = world()
    device = ray.train.torch.get_device()
    tokenizer = open_tokenizer(loop_cfg["model_in"])
    model = ConlstEncoder.load(loop_cfg["model_in"])
    frozen = freeze(model, cfg, loop_cfg["stage"])  # before DDP and the optimizer see the parameters
    model.to(device).train()
    ddp = ray.train.torch.prepare_model(StepModule(model, cfg.resources.precision),
                                        parallel_strategy_kwargs={"find_unused_parameters": True})
    # the corpora, tokenised once by the driver's Ray tasks, memory-mapped here
    stamp = tokenizer_stamp(loop_cfg["model_in"], cfg.data.max_length)
    algorithm = stage_algorithm(loop_cfg["stage"], model, cfg, tokenizer, device, loop_cfg, stamp)
    step, start_epoch = 0, 0
    state = load_checkpoint()
    if state is not None:
        algorithm.load_state_dict(state)
        step, start_epoch = state["step"], state["epoch"] + 1
    eval_rows = read_eval_rows(loop_cfg, stamp) if cfg.data.eval_during_training else []
    for rows, entry in zip(eval_rows, loop_cfg["tokens"].get("eval", [])):
        attach_frozen(rows, entry, model, cfg, device)
    metrics_path = storage.here(loop_cfg["metrics_file"]) if rank == 0 else None
    logs_out = [metrics_path, metrics_path.with_name("steps.jsonl")] if metrics_path else []
    for path in logs_out:  # a restarted worker may sit on another node: its records are in storage
        storage.fetch(path)
    if metrics_path is not None:
        drop_replayed_records(metrics_path, step, start_epoch)
    with storage.PublishEvery(logs_out):
        metrics, best = _epochs(algorithm, ddp, loop_cfg, cfg, state, tokenizer, step, start_epoch, frozen,
                                eval_rows, metrics_path)
    if rank == 0:
        model_out = storage.fetch(loop_cfg["model_out"])  # a kept epoch may have been saved on another node
        if not best.kept:
            model.save(model_out, tokenizer, card=stage_card(cfg, loop_cfg["stage"], metrics))
        keep_tokenizer_files(fetch_tokenizer(loop_cfg["model_in"]), model_out)  # same stamp: no re-tokenising
        storage.publish(model_out)


def _epochs(algorithm, ddp, loop_cfg, cfg, state, tokenizer, step, start_epoch, frozen, eval_rows,
            metrics_path) -> tuple[dict, Optional["BestEpoch"]]:
    """The stage's epochs under Ray Train: thresholds, dev metrics, the kept
    epoch and a checkpoint after each; returns the last epoch's metrics and
    (rank 0) the kept epoch."""
    rank, _ = world()
    model, device = algorithm.model, algorithm.device
    thresholds = getattr(algorithm, "thresholds", None)
    best = BestEpoch(loop_cfg, cfg, state, tokenizer) if rank == 0 else None
    metrics: dict = {}
    for epoch, step, logs in fit(algorithm, ddp, start_epoch=start_epoch, step=step,
                                 prefetch_depth=cfg.resources.prefetch_batches,
                                 steps_file=metrics_path.with_name("steps.jsonl") if metrics_path else None,
                                 before_step=loop_cfg.get("step_hook")):
        if thresholds is not None:
            write_thresholds(storage.here(loop_cfg["model_out"]).parent / "thresholds", epoch,
                             thresholds.thresholds().tolist())
        metrics = {"stage": algorithm.name, "epoch": epoch, "step": step, **frozen, **logs}
        if device.type == "cuda":
            metrics["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if rank == 0:
            if cfg.data.eval_during_training:
                metrics.update(dev_metrics(model, eval_rows, tokenizer.pad_token_id, device,
                                           cfg.source.eval_batch_size, cfg.resources.precision,
                                           cfg.data.source_lang, cfg.data.target_langs))
            best.consider(model, epoch, metrics)
            append_jsonl(metrics_path, metrics)
            for path in (metrics_path, metrics_path.with_name("steps.jsonl")):
                storage.publish(path)
        save_checkpoint({**algorithm.state_dict(), "step": step, "epoch": epoch,
                         "best_source_dev_acc": best.acc if best else None}, metrics)
    return metrics, best


class BestEpoch:
    """``source.keep_best_epoch``: the source stage's model is the epoch with
    the best source dev accuracy (no target label read), saved when it is
    reached; otherwise the last epoch's, saved at the end."""

    def __init__(self, loop_cfg: dict, cfg, state: Optional[dict], tokenizer):
        self.cfg = cfg
        self.on = loop_cfg["stage"] == "source" and cfg.source.keep_best_epoch
        self.out, self.tokenizer = loop_cfg["model_out"], tokenizer
        self.acc = state.get("best_source_dev_acc") if state else None
        self.kept = self.on and self.acc is not None  # a restarted run kept one already

    def consider(self, model, epoch: int, metrics: dict) -> None:
        acc = metrics.get("source_dev_acc")
        if not self.on or acc is None:
            return
        if self.acc is None or acc > self.acc:
            self.acc, self.kept = acc, True
            metrics["kept_epoch"] = epoch
            model.save(self.out, self.tokenizer, card=stage_card(self.cfg, "source", metrics))
            storage.publish(self.out)
        metrics["best_source_dev_acc"] = self.acc


# -- the driver ------------------------------------------------------------------------------

def fit_stage(stage: str, cfg, stage_dir: Path, model_in: str, *, target_corpus: Optional[str] = None,
              pseudo_labels: Optional[str] = None, translations: Optional[str] = None,
              langs: Optional[list] = None, step_hook: Optional[Callable[[int], None]] = None,
              num_workers: Optional[int] = None, corpus_dir: Optional[str] = None, log=print) -> dict:
    """Build and fit the TorchTrainer of one stage; the trained model lands in
    ``stage_dir/model``. Every corpus the stage reads is tokenised first (Ray
    tasks, cached under ``corpus_dir``, default ``stage_dir/../corpus``).
    ``step_hook(step)`` runs before every step on every worker (tests inject
    faults through it). Returns the last reported metrics."""
    import ray.train

    stage_dir = Path(stage_dir).resolve()
    stage_dir.mkdir(parents=True, exist_ok=True)
    res = cfg.resources
    workers = res.num_workers if num_workers is None else num_workers
    tokens = prepare_stage_tokens(stage, cfg, str(model_in), Path(corpus_dir or stage_dir.parent / "corpus"),
                                  target_corpus, translations, langs, log)
    loop_cfg = {"tokens": tokens, "stage": stage, "config": cfg, "model_in": str(model_in),
                "model_out": str(stage_dir / "model"), "metrics_file": str(stage_dir / "metrics.jsonl"),
                "target_corpus": target_corpus, "pseudo_labels": pseudo_labels, "translations": translations,
                "langs": langs, "step_hook": step_hook}
    scaling = ray.train.ScalingConfig(num_workers=workers, use_gpu=res.use_gpu,
                                      resources_per_worker={"CPU": res.cpus_per_worker} if workers else None)
    # Same name + storage path: a rerun of an interrupted stage resumes from its last checkpoint.
    # With object storage the checkpoints live there, where a restarted worker on any node finds them.
    where = storage.remote(stage_dir / "ray_train")
    run_config = ray.train.RunConfig(name=f"{stage_dir.parent.name}-{stage_dir.name}",
                                     storage_path=where[1] if where else str(stage_dir / "ray_train"),
                                     storage_filesystem=where[0] if where else None,
                                     failure_config=ray.train.FailureConfig(max_failures=res.max_failures))
    trainer = _trainer_class()(train_loop_per_worker, train_loop_config=loop_cfg, scaling_config=scaling, run_config=run_config)
    epochs = {"source": cfg.source.epochs, "conl": cfg.conl.epochs, "ssl": cfg.ssl.iterations}[stage]
    with StageWatcher(stage_dir, stage, epochs, log=log):  # progress lines and TensorBoard, in the driver
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


def fit_plain(stage: str, cfg, model_in: str, corpus_dir: Path, *, target_corpus: Optional[str] = None,
              pseudo_labels: Optional[str] = None, device="cpu", steps_file: Optional[Path] = None):
    """The same stage in this process without Ray Train: the same algorithm
    object in the same step loop, on ``device`` (the benchmarks' plain loop).
    Reads the token files the Ray stages made (tokenises what is missing).
    Returns the trained algorithm object."""
    from conlst_ray.data.token_files import open_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = open_tokenizer(model_in)
    model = ConlstEncoder.load(model_in)
    freeze(model, cfg, stage)
    model.to(device).train()
    tokens = prepare_stage_tokens(stage, cfg, model_in, Path(corpus_dir), target_corpus, None, None, log=lambda *_: None)
    loop_cfg = {"tokens": tokens, "pseudo_labels": pseudo_labels}
    algorithm = stage_algorithm(stage, model, cfg, tokenizer, torch.device(device), loop_cfg,
                                tokenizer_stamp(model_in, cfg.data.max_length))
    for _ in fit(algorithm, StepModule(model, cfg.resources.precision), prefetch_depth=cfg.resources.prefetch_batches,
                 steps_file=steps_file):
        pass
    return algorithm
