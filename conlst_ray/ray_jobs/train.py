"""Ray Train (V2) loops for the three stages: source fine-tuning, CoNL (Eq. 8)
and self-training (Eq. 12), each a thin loop over ``algorithm.steps``.

Data parallelism: every worker builds the same *global* batch plan from the
seed (row order, complementary labels, negatives) and takes its slice, so
1 or N workers see the same global batches and run the same number of steps
(no worker waits at the end of an epoch). Gradients are averaged by DDP
(gloo on CPU, NCCL on GPU) through ``ray.train.torch.prepare_model``; the
step runs inside the wrapped module's ``forward`` so DDP sees every head.
Statistics over the whole target set (pseudo-labels, FlexMatch counts) are
all-gathered, so every worker applies the same thresholds.

A checkpoint (model, optimizer, scheduler, FlexMatch state, RNG state, step)
is reported every epoch (an SSL iteration counts as one); a restarted worker
group resumes from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from conlst_ray.algorithm.steps import build_conl_batch, conl_pool, conl_step, plan_negatives, source_step
from conlst_ray.algorithm.thresholds import make_thresholds
from conlst_ray.config import config_from_dict
from conlst_ray.model import ConlstEncoder, apply_freezing
from conlst_ray.ray_jobs.ssl_loop import ssl_epoch
from conlst_ray.ray_jobs.worker import (StepModule, append_jsonl, drop_replayed_records, epoch_means, global_plan,
                                        load_checkpoint, maybe_fail, my_slice, accumulated_step, micro_batches, record_step,
                                        rng_state, save_checkpoint, set_rng_state, world)
from conlst_ray.ray_jobs.stage_data import prepare_stage_tokens, read_backtranslations, read_eval_rows, read_q, read_stage_data
from conlst_ray.token_rows import keep_tokenizer_files, tokenizer_stamp
from conlst_ray.training import (accuracy_by_language, batch_of, linear_warmup_schedule, make_optimizer,
                                 predict_proba, prefetch, to_device)

__all__ = ["fit_stage", "global_plan", "train_loop_per_worker"]


def evaluate(model, cfg, eval_rows, pad_id: int, device) -> dict:
    """Dev accuracy per language, on the worker's own device (the model must
    not leave it in the middle of a stage)."""
    accs = {}
    for rows in eval_rows:
        q = predict_proba(model, rows, pad_id, cfg.source.eval_batch_size, device, cfg.resources.precision)
        accs.update(accuracy_by_language(q, rows))
    model.train()
    targets = [accs[lang] for lang in cfg.data.target_langs if lang in accs]
    out = {f"acc_{lang}": acc for lang, acc in accs.items()}
    if targets:
        out["target_dev_acc"] = float(np.mean(targets))
    if cfg.data.source_lang in accs:
        out["source_dev_acc"] = accs[cfg.data.source_lang]
    return out


# -- the loop ------------------------------------------------------------------------------

def train_loop_per_worker(loop_cfg: dict) -> None:
    """One stage on one worker. ``loop_cfg``: stage, config (resolved dict),
    model_in, model_out, target_corpus, pseudo_labels, translations, metrics_file."""
    import ray.train.torch
    from transformers import AutoTokenizer

    cfg = config_from_dict(loop_cfg["config"])
    stage = loop_cfg["stage"]
    torch.manual_seed(cfg.seed)
    rank, size = world()
    device = ray.train.torch.get_device()
    tokenizer = AutoTokenizer.from_pretrained(loop_cfg["model_in"])
    model = ConlstEncoder.load(loop_cfg["model_in"])
    frozen = apply_freezing(model, cfg.model)  # before DDP and the optimizer see the parameters
    model.to(device).train()
    ddp = ray.train.torch.prepare_model(StepModule(model, cfg.resources.precision),
                                        parallel_strategy_kwargs={"find_unused_parameters": True})
    # the corpora, tokenised once by the driver's Ray tasks, memory-mapped here
    stamp = tokenizer_stamp(loop_cfg["model_in"], cfg.data.max_length)
    source, target = read_stage_data(loop_cfg, stamp)
    if stage == "ssl" and cfg.ssl.use_backtranslation:
        loop_cfg = dict(loop_cfg, _backtranslations=read_backtranslations(loop_cfg, target, stamp))
    stage_cfg = {"source": cfg.source, "conl": cfg.conl, "ssl": cfg.ssl}[stage]
    epochs = cfg.ssl.iterations if stage == "ssl" else stage_cfg.epochs
    steps_per_epoch = _steps_per_epoch(stage, cfg, source, target)
    optimizer = make_optimizer(model, stage_cfg.lr, getattr(stage_cfg, "weight_decay", 0.0))
    # self-training sizes its schedule per iteration, by the rows it selects
    scheduler = (linear_warmup_schedule(optimizer, max(1, steps_per_epoch * epochs),
                                        getattr(stage_cfg, "warmup_ratio", 0.0)) if stage != "ssl" else None)
    thresholds = make_thresholds(cfg.ssl, len(target), model.num_labels) if stage == "ssl" else None
    step, start_epoch = 0, 0
    state = load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if thresholds is not None and state.get("thresholds"):
            thresholds.load_state_dict(state["thresholds"])
        set_rng_state(state["rng"])
        step, start_epoch = state["step"], state["epoch"] + 1
    q = read_q(loop_cfg["pseudo_labels"], target.ids) if stage == "conl" else None
    eval_rows = read_eval_rows(loop_cfg, stamp) if cfg.data.eval_during_training else []
    metrics_path = Path(loop_cfg["metrics_file"]) if rank == 0 else None
    if metrics_path is not None:
        drop_replayed_records(metrics_path, step, start_epoch)
    for epoch in range(start_epoch, epochs):
        run_epoch = {"source": _source_epoch, "conl": _conl_epoch, "ssl": ssl_epoch}[stage]
        logs, step = run_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tokenizer,
                               optimizer, scheduler, epoch, step, device, metrics_path)
        metrics = {"stage": stage, "epoch": epoch, "step": step, **frozen, **logs}
        if device.type == "cuda":
            metrics["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if rank == 0:
            if cfg.data.eval_during_training:
                metrics.update(evaluate(model, cfg, eval_rows, tokenizer.pad_token_id, device))
            append_jsonl(metrics_path, metrics)
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": rng_state(), "step": step, "epoch": epoch,
                         "thresholds": thresholds.state_dict() if thresholds is not None else None}, metrics)
    if rank == 0:
        model.save(loop_cfg["model_out"], tokenizer)
        keep_tokenizer_files(loop_cfg["model_in"], loop_cfg["model_out"])  # same stamp: no re-tokenising


def _steps_per_epoch(stage, cfg, source, target) -> int:
    if stage == "source":
        return len(source) // cfg.source.batch_size
    if stage == "conl":
        return len(target) // cfg.conl.batch_size
    return 0  # self-training: sized per iteration (ssl_schedule)


def _source_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
                  epoch, step, device, metrics_path):
    def steps():  # built ahead of the step (prefetch): padded, on the device
        for gbatch in global_plan(len(source), cfg.source.batch_size, cfg.seed, epoch):
            idx = my_slice(gbatch)
            yield [(source_step, (to_device(batch_of(source, part, tok.pad_token_id), device),
                                  torch.as_tensor(source.labels[part]).to(device)), len(part) / len(idx))
                   for part in micro_batches(idx, cfg.source.grad_accum, "source.grad_accum")]

    sums: dict[str, list] = {}
    for parts in prefetch(steps(), cfg.resources.prefetch_batches):
        maybe_fail(loop_cfg, step)
        logs = accumulated_step(ddp, model, parts, optimizer, scheduler, cfg.source.max_grad_norm)
        step += 1
        record_step(sums, metrics_path, logs, stage="source", epoch=epoch, step=step)
    return epoch_means(sums), step


def _conl_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
                epoch, step, device, metrics_path):
    c = cfg.conl
    pool, gamma, by_lang = conl_pool(target, q, c, model.num_labels, seed=cfg.seed * 1000 + epoch)
    src_rng = np.random.default_rng([cfg.seed, epoch, 7])
    rank, size = world()

    def steps(first_step):  # built ahead of the step (prefetch), in order: the same draws
        for n, gbatch in enumerate(global_plan(len(target), c.batch_size, cfg.seed, epoch)):
            # global draws (complementary labels, negatives, source rows) are made
            # identically on every worker; each then builds the batch of its rows
            g = torch.Generator().manual_seed(cfg.seed * 100003 + first_step + n)
            comp, drawn = plan_negatives(target, gbatch, q, pool, c, g, gamma)
            src_idx = src_rng.choice(len(source), size=c.source_batch_size, replace=False)
            rows = np.arange(len(gbatch))[rank::size]
            anchor_parts = micro_batches(rows, c.grad_accum, "conl.grad_accum")
            source_parts = np.array_split(my_slice(src_idx), len(anchor_parts))
            yield [(conl_step, (_conl_to(build_conl_batch(target, gbatch[a], comp[a], drawn[a], tok.pad_token_id,
                                                          source, s), device), c, g), len(a) / len(rows))
                   for a, s in zip(anchor_parts, source_parts)]

    sums: dict[str, list] = {}
    for parts in prefetch(steps(step), cfg.resources.prefetch_batches):
        maybe_fail(loop_cfg, step)
        logs = accumulated_step(ddp, model, parts, optimizer, scheduler)
        step += 1
        record_step(sums, metrics_path, logs, stage="conl", epoch=epoch, step=step)
    out = epoch_means(sums)
    out.update({f"gamma_{lang}": g for lang, g in by_lang.items()})
    out["pool_size"] = pool.size()  # confident target samples negatives are drawn from (Eq. 5)
    return out, step


def _conl_to(batch, device):
    batch.anchors = to_device(batch.anchors, device)
    if batch.negatives is not None:
        batch.negatives = to_device(batch.negatives, device)
    if batch.source is not None:
        batch.source = to_device(batch.source, device)
        batch.source_labels = batch.source_labels.to(device)
    return batch


# -- the driver ------------------------------------------------------------------------------

def fit_stage(stage: str, cfg, stage_dir: Path, model_in: str, *, target_corpus: Optional[str] = None,
              pseudo_labels: Optional[str] = None, translations: Optional[str] = None,
              langs: Optional[list] = None, inject_failure: Optional[dict] = None,
              num_workers: Optional[int] = None, corpus_dir: Optional[str] = None, log=print) -> dict:
    """Build and fit the TorchTrainer of one stage; the trained model lands in
    ``stage_dir/model``. Every corpus the stage reads is tokenised first (Ray
    tasks, cached under ``corpus_dir``, default ``stage_dir/../corpus``).
    Returns the last reported metrics."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from conlst_ray.config import to_dict

    stage_dir = Path(stage_dir).resolve()
    stage_dir.mkdir(parents=True, exist_ok=True)
    res = cfg.resources
    workers = res.num_workers if num_workers is None else num_workers
    tokens = prepare_stage_tokens(stage, cfg, str(model_in), Path(corpus_dir or stage_dir.parent / "corpus"),
                                  target_corpus, translations, langs, log)
    loop_cfg = {"tokens": tokens, "stage": stage, "config": to_dict(cfg), "model_in": str(model_in),
                "model_out": str(stage_dir / "model"), "metrics_file": str(stage_dir / "metrics.jsonl"),
                "target_corpus": target_corpus, "pseudo_labels": pseudo_labels, "translations": translations,
                "langs": langs, "inject_failure": inject_failure}
    scaling = ray.train.ScalingConfig(num_workers=workers, use_gpu=res.use_gpu,
                                      resources_per_worker={"CPU": res.cpus_per_worker} if workers else None)
    # Same name + storage path: a rerun of an interrupted stage resumes from its last checkpoint.
    run_config = ray.train.RunConfig(name=f"{stage_dir.parent.name}-{stage_dir.name}",
                                     storage_path=str(stage_dir / "ray_train"),
                                     failure_config=ray.train.FailureConfig(max_failures=res.max_failures))
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=loop_cfg, scaling_config=scaling, run_config=run_config)
    result = trainer.fit()
    return dict(result.metrics or {})
