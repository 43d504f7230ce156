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

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from conlst_ray.algorithm.negatives import NegativePool, relative_gamma
from conlst_ray.algorithm.steps import (SslBatch, build_conl_batch, conl_step, plan_negatives, source_step,
                                        ssl_step, strong_view)
from conlst_ray.algorithm.thresholds import make_thresholds, relative_tau
from conlst_ray.config import config_from_dict
from conlst_ray.model import ConlstEncoder, apply_freezing
from conlst_ray.training import (accuracy_on, autocast, batch_of, encode_table, linear_warmup_schedule,
                                 make_optimizer, predict_proba, to_device)

STATE_FILE = "train_state.pt"


# -- distributed helpers ------------------------------------------------------------------

def world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_mean(value: float) -> float:
    rank, size = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item() / size)


def all_gather_rows(index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (index, values) of every worker (gloo: equal-size tensors,
    so each pads to the longest)."""
    rank, size = world()
    if size == 1:
        return index, values
    n = torch.tensor([len(index)])
    sizes = [torch.zeros_like(n) for _ in range(size)]
    torch.distributed.all_gather(sizes, n)
    width = int(max(s.item() for s in sizes))
    idx = torch.full((width,), -1, dtype=torch.long)
    idx[: len(index)] = torch.as_tensor(index)
    val = torch.zeros((width,) + values.shape[1:], dtype=torch.float32)
    val[: len(index)] = torch.as_tensor(values)
    idxs = [torch.zeros_like(idx) for _ in range(size)]
    vals = [torch.zeros_like(val) for _ in range(size)]
    torch.distributed.all_gather(idxs, idx)
    torch.distributed.all_gather(vals, val)
    out_i = torch.cat([i[: int(s.item())] for i, s in zip(idxs, sizes)]).numpy()
    out_v = torch.cat([v[: int(s.item())] for v, s in zip(vals, sizes)]).numpy()
    return out_i, out_v


def global_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Full global batches of a seeded permutation (the last partial batch is
    dropped so every worker runs the same number of steps)."""
    if n < batch_size:
        raise ValueError(f"only {n} rows for a global batch of {batch_size}: lower the batch size")
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def my_slice(batch: np.ndarray) -> np.ndarray:
    rank, size = world()
    if len(batch) % size:
        raise ValueError(f"global batch {len(batch)} is not divisible by {size} workers")
    return batch[rank::size]


class StepModule(nn.Module):
    """Runs one algorithm step in ``forward`` so DDP can wrap it, under the
    configured precision (``resources.precision``)."""

    def __init__(self, model: ConlstEncoder, precision: str = "auto"):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, step_fn, *args):
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            return step_fn(self.model, *args)


# -- checkpoints ---------------------------------------------------------------------------

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
        return torch.load(Path(d) / STATE_FILE, weights_only=False)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def maybe_fail(loop_cfg: dict, step: int) -> None:
    """Fault injection for recovery tests: one worker dies once at a step."""
    fail = loop_cfg.get("inject_failure")
    if not fail or step != fail["step"]:
        return
    rank, size = world()
    marker = Path(fail["marker"])
    if rank == size - 1 and not marker.exists():
        marker.write_text("failed once")
        os._exit(1)


# -- data ----------------------------------------------------------------------------------

def read_stage_data(cfg, loop_cfg: dict, tokenizer):
    """Source rows (labelled) and target rows with their pseudo-label q."""
    import pyarrow.parquet as pq

    from conlst_ray.data.corpora import source_corpus

    source = encode_table(tokenizer, source_corpus(cfg.data, "train", log=lambda *_: None), cfg.data.max_length)
    target = None
    if loop_cfg.get("target_corpus"):
        files = sorted(Path(loop_cfg["target_corpus"]).glob("lang=*/shard-*.parquet"))
        import pyarrow as pa

        table = pa.concat_tables([pq.read_table(f) for f in files])
        if loop_cfg.get("langs"):
            import pyarrow.compute as pc

            table = table.filter(pc.is_in(table.column("lang"), pa.array(loop_cfg["langs"])))
        target = encode_table(tokenizer, table, cfg.data.max_length)
        target.gold = target.labels.copy()  # kept for analysis only, never trained on
        target.labels[:] = -1
    return source, target


def read_q(path: str, ids: list) -> np.ndarray:
    from conlst_ray.ray_jobs.sharded import read_outputs

    table = read_outputs(path)
    lookup = dict(zip(table.column("id").to_pylist(), table.column("q").to_pylist()))
    missing = [i for i in ids if i not in lookup]
    if missing:
        raise ValueError(f"{path}: no pseudo-label for {len(missing)} target rows (e.g. {missing[0]})")
    return np.asarray([lookup[i] for i in ids], dtype=np.float32)


def evaluate(model, tokenizer, cfg, eval_tables, device) -> dict:
    """Dev accuracy per language, on the worker's own device (the model must
    not leave it in the middle of a stage)."""
    accs = {}
    for table in eval_tables:
        accs.update(accuracy_on(model, tokenizer, table, cfg.data.max_length, cfg.source.eval_batch_size, device,
                                cfg.resources.precision))
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
    source, target = read_stage_data(cfg, loop_cfg, tokenizer)
    if stage == "ssl" and loop_cfg.get("translations") and cfg.ssl.use_backtranslation:
        loop_cfg = dict(loop_cfg, _backtranslations=read_backtranslations(
            loop_cfg["translations"], target, tokenizer, cfg.data.max_length))
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
    eval_tables = _eval_tables(cfg) if cfg.data.eval_during_training else []
    metrics_path = Path(loop_cfg["metrics_file"]) if rank == 0 else None
    for epoch in range(start_epoch, epochs):
        run_epoch = {"source": _source_epoch, "conl": _conl_epoch, "ssl": _ssl_epoch}[stage]
        logs, step = run_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tokenizer,
                               optimizer, scheduler, epoch, step, device, metrics_path)
        metrics = {"stage": stage, "epoch": epoch, "step": step, **frozen, **logs}
        if device.type == "cuda":
            metrics["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if rank == 0:
            if cfg.data.eval_during_training:
                metrics.update(evaluate(model, tokenizer, cfg, eval_tables, device))
            _append_jsonl(metrics_path, metrics)
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": rng_state(), "step": step, "epoch": epoch,
                         "thresholds": thresholds.state_dict() if thresholds is not None else None}, metrics)
    if rank == 0:
        model.save(loop_cfg["model_out"], tokenizer)


def _steps_per_epoch(stage, cfg, source, target) -> int:
    if stage == "source":
        return len(source) // cfg.source.batch_size
    if stage == "conl":
        return len(target) // cfg.conl.batch_size
    return 0  # self-training: sized per iteration (ssl_schedule)


def _eval_tables(cfg) -> list:
    from conlst_ray.data.corpora import eval_corpus

    table = eval_corpus(cfg.data, "dev", log=lambda *_: None)
    return [table] if table is not None else []


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def _optimizer_step(model, loss, optimizer, scheduler, max_norm: float = 1.0) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()


def _record_step(sums: dict, metrics_path, logs: dict, **tags) -> None:
    """Average a step's log terms over the workers, keep them for the epoch
    means, and (rank 0) append them to steps.jsonl with a timestamp."""
    record = {k: all_mean(v) for k, v in logs.items()}
    for k, v in record.items():
        sums.setdefault(k, []).append(v)
    if metrics_path is not None:
        _append_jsonl(metrics_path.with_name("steps.jsonl"), {**tags, **record, "time": time.time()})


def _epoch_means(sums: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _source_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
                  epoch, step, device, metrics_path):
    sums: dict[str, list] = {}
    for gbatch in global_plan(len(source), cfg.source.batch_size, cfg.seed, epoch):
        maybe_fail(loop_cfg, step)
        idx = my_slice(gbatch)
        batch = to_device(batch_of(source, idx, tok.pad_token_id), device)
        labels = torch.as_tensor(source.labels[idx], device=device)
        loss, logs = ddp(source_step, batch, labels)
        _optimizer_step(model, loss, optimizer, scheduler, cfg.source.max_grad_norm)
        step += 1
        _record_step(sums, metrics_path, logs, stage="source", step=step)
    return _epoch_means(sums), step


def _conl_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
                epoch, step, device, metrics_path):
    c = cfg.conl
    gamma, by_lang = (relative_gamma(q.max(-1), target.langs, c.gamma_quantile) if c.gamma_quantile
                      else (None, {}))
    pool = NegativePool(np.arange(len(target)), q.argmax(-1), q.max(-1), c.gamma if gamma is None else gamma,
                        model.num_labels, target.langs, seed=cfg.seed * 1000 + epoch)
    src_rng = np.random.default_rng([cfg.seed, epoch, 7])
    rank, size = world()
    sums: dict[str, list] = {}
    for gbatch in global_plan(len(target), c.batch_size, cfg.seed, epoch):
        maybe_fail(loop_cfg, step)
        # global draws (complementary labels, negatives, source rows) are made
        # identically on every worker; each then builds the batch of its rows
        g = torch.Generator().manual_seed(cfg.seed * 100003 + step)
        comp, drawn = plan_negatives(target, gbatch, q, pool, c, g, gamma)
        src_idx = src_rng.choice(len(source), size=c.source_batch_size, replace=False)
        rows = np.arange(len(gbatch))[rank::size]
        batch = build_conl_batch(target, gbatch[rows], comp[rows], drawn[rows], tok.pad_token_id,
                                 source, my_slice(src_idx))
        loss, logs = ddp(conl_step, _conl_to(batch, device), c, g)
        _optimizer_step(model, loss, optimizer, scheduler)
        step += 1
        _record_step(sums, metrics_path, logs, stage="conl", step=step)
    out = _epoch_means(sums)
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


def pseudo_label_in_workers(model, target, tok, cfg, device) -> np.ndarray:
    """q for every target row: each worker labels its rows, then all-gather."""
    rank, size = world()
    mine = np.arange(len(target))[rank::size]
    from conlst_ray.training import Encoded

    part = Encoded([target.input_ids[i] for i in mine],
                   [target.token_type_ids[i] for i in mine] if target.token_type_ids is not None else None,
                   target.labels[mine], [target.ids[i] for i in mine], [target.langs[i] for i in mine])
    q_mine = predict_proba(model, part, tok.pad_token_id, cfg.source.eval_batch_size, device, cfg.resources.precision)
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


def _ssl_epoch(ddp, model, cfg, loop_cfg, source, target, q, thresholds, tok, optimizer, scheduler,
               epoch, step, device, metrics_path):
    """One self-training iteration: pseudo-label every target row, select by
    the thresholds, then ``ssl.epochs_per_iteration`` passes over the
    selected rows, each row seen under one strong view per pass."""
    s = cfg.ssl
    t0 = time.perf_counter()
    q = pseudo_label_in_workers(model, target, tok, cfg, device)
    label_seconds = time.perf_counter() - t0
    conf, pred = q.max(-1), q.argmax(-1)
    if s.threshold_quantile:  # tau relative to this iteration's confidences
        thresholds.tau = relative_tau(conf, s.threshold_quantile)
    thresholds.update(np.arange(len(target)), pred, conf > thresholds.tau)
    mask, _ = thresholds.mask(torch.as_tensor(q))
    selected = np.flatnonzero(mask.numpy())
    _write_thresholds(loop_cfg, epoch, thresholds)
    bt = loop_cfg.get("_backtranslations")
    special = set(tok.all_special_ids)
    sums: dict[str, list] = {}
    plans = [global_plan(len(selected), s.batch_size, cfg.seed, epoch * 1000 + e) if len(selected) >= s.batch_size
             else [] for e in range(s.epochs_per_iteration)]
    scheduler = ssl_schedule(optimizer, sum(map(len, plans)), s.warmup_ratio)
    for e, plan in enumerate(plans):
        src_rng = np.random.default_rng([cfg.seed, epoch, e, 11])
        for local in plan:
            maybe_fail(loop_cfg, step)
            gbatch = selected[local]
            src_idx = src_rng.choice(len(source), size=s.batch_size, replace=False)
            idx, sidx = my_slice(gbatch), my_slice(src_idx)
            g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
            view, mixup_rows, aug_logs = strong_view(target, bt, idx, tok.pad_token_id, s, special,
                                                     tok.mask_token_id, g)
            batch = SslBatch(source=to_device(batch_of(source, sidx, tok.pad_token_id), device),
                             source_labels=torch.as_tensor(source.labels[sidx], device=device),
                             strong=to_device(view, device), pseudo_labels=torch.as_tensor(pred[idx], device=device),
                             mask=torch.ones(len(idx), dtype=torch.bool, device=device), mixup_rows=mixup_rows)
            loss, logs = ddp(ssl_step, batch, s, np.random.default_rng([cfg.seed, step]))
            _optimizer_step(model, loss, optimizer, scheduler)
            step += 1
            _record_step(sums, metrics_path, {**logs, **aug_logs, "lr": scheduler.get_last_lr()[0]},
                         stage="ssl", iteration=epoch, step=step)
    out = _epoch_means(sums)
    out.update({"selected": int(len(selected)), "selected_share": float(len(selected) / len(target)),
                "pseudo_label_seconds": label_seconds, "pseudo_label_rows": len(target),
                "tau": float(thresholds.tau), "thresholds": [round(float(t), 4) for t in thresholds.thresholds()]})
    out.update(selection_quality(target, pred, selected))
    return out, step


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


def _write_thresholds(loop_cfg, epoch, thresholds) -> None:
    """Every worker writes the thresholds it applies (they must agree)."""
    rank, _ = world()
    folder = Path(loop_cfg["model_out"]).parent / "thresholds"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"iter{epoch}.rank{rank}.json").write_text(json.dumps(thresholds.thresholds().tolist()))


# -- the driver ------------------------------------------------------------------------------

def read_backtranslations(path: str, target, tokenizer, max_length: int):
    """Back-translated text aligned with ``target`` rows; rows without a
    translation (uncovered language) keep their original text."""
    from conlst_ray.ray_jobs.sharded import read_outputs
    from conlst_ray.training import Encoded

    table = read_outputs(path)
    by_id = {i: (p, h) for i, p, h in zip(table.column("id").to_pylist(), table.column("premise").to_pylist(),
                                          table.column("hypothesis").to_pylist())}
    have = [i in by_id for i in target.ids]
    pairs = [by_id.get(i, (None, None)) for i in target.ids]
    enc = tokenizer([p or "" for p, _ in pairs], [h or "" for _, h in pairs], truncation=True,
                    max_length=max_length, padding=False)
    ids = [e if ok else orig for e, ok, orig in zip(enc["input_ids"], have, target.input_ids)]
    types = None
    if target.token_type_ids is not None:
        types = [e if ok else orig for e, ok, orig in zip(enc["token_type_ids"], have, target.token_type_ids)]
    return Encoded(ids, types, target.labels, target.ids, target.langs)


def fit_stage(stage: str, cfg, stage_dir: Path, model_in: str, *, target_corpus: Optional[str] = None,
              pseudo_labels: Optional[str] = None, translations: Optional[str] = None,
              langs: Optional[list] = None, inject_failure: Optional[dict] = None,
              num_workers: Optional[int] = None) -> dict:
    """Build and fit the TorchTrainer of one stage; the trained model lands in
    ``stage_dir/model``. Returns the last reported metrics."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from conlst_ray.config import to_dict

    stage_dir = Path(stage_dir).resolve()
    stage_dir.mkdir(parents=True, exist_ok=True)
    res = cfg.resources
    workers = res.num_workers if num_workers is None else num_workers
    loop_cfg = {"stage": stage, "config": to_dict(cfg), "model_in": str(model_in),
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
