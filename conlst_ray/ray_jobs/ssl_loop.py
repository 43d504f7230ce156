"""Self-training (Eq. 12-14) on a Ray Train worker: each iteration
pseudo-labels every target row in the workers, selects by the thresholds,
and trains on one strong view per selected row under its own schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from conlst_ray.algorithm.steps import SslBatch, ssl_step, strong_view
from conlst_ray.algorithm.thresholds import relative_tau
from conlst_ray.ray_jobs.worker import (all_gather_rows, epoch_means, global_plan, maybe_fail, my_slice,
                                        accumulated_step, micro_batches, record_step, world)
from conlst_ray.training import batch_of, linear_warmup_schedule, predict_proba, prefetch, to_device


def pseudo_label_in_workers(model, target, tok, cfg, device) -> np.ndarray:
    """q for every target row: each worker labels its rows, then all-gather."""
    rank, size = world()
    mine = np.arange(len(target))[rank::size]
    q_mine = predict_proba(model, target, tok.pad_token_id, cfg.source.eval_batch_size, device,
                           cfg.resources.precision, index=mine)
    model.train()
    idx, q = all_gather_rows(mine, q_mine)
    out = np.zeros((len(target), q.shape[1]), dtype=np.float32)
    out[idx] = q
    return out


def ssl_schedule(optimizer, n_steps: int, warmup_ratio: float):
    """One self-training iteration's learning rate: linear warm-up, then a
    linear decay that reaches 0 at the iteration's last step -- sized by the
    steps that really run (selected rows x epochs), not by the corpus."""
    for group in optimizer.param_groups:  # every iteration starts from the configured rate
        group["lr"] = group.get("initial_lr", group["lr"])
    return linear_warmup_schedule(optimizer, max(1, n_steps), warmup_ratio)


def ssl_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
               epoch, step, device, metrics_path):
    """One self-training iteration: pseudo-label every target row, select by
    the thresholds, then ``ssl.epochs_per_iteration`` passes over the
    selected rows, each row seen under one strong view per pass."""
    s = cfg.ssl
    t0 = time.perf_counter()
    q = pseudo_label_in_workers(model, target, tok, cfg, device)
    label_seconds = time.perf_counter() - t0
    conf, pred = q.max(-1), q.argmax(-1)
    if s.thresholding == "class_quantile":
        thresholds.update(np.arange(len(target)), pred, None, conf)
    else:
        if s.threshold_quantile:  # tau relative to this iteration's confidences
            thresholds.tau = relative_tau(conf, s.threshold_quantile)
        thresholds.update(np.arange(len(target)), pred, conf > thresholds.tau)
    mask, _ = thresholds.mask(torch.as_tensor(q))
    selected = np.flatnonzero(mask.numpy())
    write_thresholds(loop_cfg, epoch, thresholds)
    bt = loop_cfg.get("_backtranslations")
    special = set(tok.all_special_ids)
    sums: dict[str, list] = {}
    plans = [global_plan(len(selected), s.batch_size, cfg.seed, epoch * 1000 + e) if len(selected) >= s.batch_size
             else [] for e in range(s.epochs_per_iteration)]
    scheduler = ssl_schedule(optimizer, sum(map(len, plans)), s.warmup_ratio)
    def steps(first_step):  # built ahead of the step (prefetch), in order: the same draws
        n = first_step
        for e, plan in enumerate(plans):
            src_rng = np.random.default_rng([cfg.seed, epoch, e, 11])
            for local in plan:
                gbatch = selected[local]
                src_idx = src_rng.choice(len(source), size=s.batch_size, replace=False)
                idx, sidx = my_slice(gbatch), my_slice(src_idx)
                g = torch.Generator().manual_seed(cfg.seed * 7919 + n)
                rng = np.random.default_rng([cfg.seed, n])
                parts = []
                for part, spart in zip(micro_batches(idx, s.grad_accum, "ssl.grad_accum"),
                                       np.array_split(sidx, s.grad_accum)):
                    batch, aug_logs = _ssl_batch(target, bt, source, part, spart, pred, tok, s, special, g, device)
                    parts.append((_logged(ssl_step, aug_logs), (batch, s, rng), len(part) / len(idx)))
                n += 1
                yield parts

    for parts in prefetch(steps(step), cfg.resources.prefetch_batches):
        maybe_fail(loop_cfg, step)
        logs = accumulated_step(ddp, model, parts, optimizer, scheduler)
        step += 1
        record_step(sums, metrics_path, {**logs, "lr": scheduler.get_last_lr()[0]},
                    stage="ssl", iteration=epoch, step=step)
    out = epoch_means(sums)
    out.update({"selected": int(len(selected)), "selected_share": float(len(selected) / len(target)),
                "pseudo_label_seconds": label_seconds, "pseudo_label_rows": len(target),
                "tau": None if s.thresholding == "class_quantile" else float(thresholds.tau), "thresholds": [round(float(t), 4) for t in thresholds.thresholds()]})
    out.update(selection_quality(target, pred, selected))
    return out, step


def _ssl_batch(target, bt, source, idx, sidx, pred, tok, s, special, g, device):
    """Eq. 12's inputs for target rows ``idx`` (one strong view each) and source rows ``sidx``."""
    view, mixup_rows, aug_logs = strong_view(target, bt, idx, tok.pad_token_id, s, special, tok.mask_token_id, g)
    batch = SslBatch(source=to_device(batch_of(source, sidx, tok.pad_token_id), device),
                     source_labels=torch.as_tensor(source.labels[sidx], device=device),
                     strong=to_device(view, device), pseudo_labels=torch.as_tensor(pred[idx], device=device),
                     mask=torch.ones(len(idx), dtype=torch.bool, device=device), mixup_rows=mixup_rows)
    return batch, aug_logs


def _logged(step_fn, extra: dict):
    """``step_fn`` whose logs also carry ``extra`` (a micro-batch's augmentation shares)."""
    def run(model, *args):
        loss, logs = step_fn(model, *args)
        return loss, {**logs, **extra}
    return run


def selection_quality(target, pred: np.ndarray, selected: np.ndarray) -> dict:
    """Pseudo-label accuracy of the selected rows and of all rows (gold
    labels read for this analysis only, never trained on)."""
    gold = getattr(target, "gold", None)
    if gold is None or not (gold >= 0).any():
        return {}
    known = gold >= 0
    out = {"all_pseudo_label_acc": float((pred[known] == gold[known]).mean())}
    sel = selected[known[selected]]
    if len(sel):
        out["selected_pseudo_label_acc"] = float((pred[sel] == gold[sel]).mean())
    return out


def write_thresholds(loop_cfg, epoch, thresholds) -> None:
    """Every worker writes the thresholds it applies (they must agree)."""
    rank, _ = world()
    folder = Path(loop_cfg["model_out"]).parent / "thresholds"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"iter{epoch}.rank{rank}.json").write_text(json.dumps(thresholds.thresholds().tolist()))
