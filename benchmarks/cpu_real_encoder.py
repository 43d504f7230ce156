"""multilingual-e5-small on a CPU: today's CPU path against the fast one, in one run.

    python -m benchmarks.cpu_real_encoder                     # ~10 min on 2 cores; nothing else should run
    python -m benchmarks.cpu_real_encoder --model runs/real_gain_cpu/seed0/source/model   # + zero-shot accuracy

On real XNLI pairs (French dev rows as target text, English MultiNLI as
source), with the stage objects of conlst_ray.algorithm through their own
``train_step`` (batches built as in a run), it measures rows per second of:

- the source step (labelled pairs), the CoNL step (anchors), the
  self-training step (selected target rows) and scoring (inference);
- for ``before`` (tune_configs/xnli_e5_small_cpu.yaml as it was: fp32, word
  embeddings and the lower 6 layers frozen, random batches) and for the
  fast path (bf16 autocast, frozen layers computed once per row and cached,
  length-bucketed batches) at 6 and at 8 frozen layers;
- next to the limit: a bare PyTorch step of the same trainable layers
  (upper layers from precomputed states, cross-entropy, AdamW), no batches
  to build, nothing around it.

With --model (a trained source model) it also scores the first --test-rows
rows of each language of xnli_test_a with fp32 and with the fast path: the
two must agree within 0.5 point. Writes JSON to --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BEFORE = ["resources.precision=fp32", "model.freeze_embeddings=true", "model.freeze_layers=6",
          "model.cache_frozen=false",
          "resources.length_buckets=false"]
FAST = ["resources.precision=bf16", "model.freeze_embeddings=true", "model.cache_frozen=true",
        "resources.length_buckets=true"]
PATHS = {"before (fp32, 6 frozen)": BEFORE,
         "fast path, 6 frozen": FAST + ["model.freeze_layers=6"],
         "fast path, 8 frozen": FAST + ["model.freeze_layers=8"]}
COMMON = ["resources.use_gpu=false", "conl.gamma_quantile=0.8", "conl.batch_size=32", "conl.source_batch_size=16",
          "source.batch_size=32", "ssl.batch_size=32", "ssl.thresholding=class_quantile",
          "ssl.threshold_quantile=0.2", "source.eval_batch_size=64"]


def pairs(spec: str, lang: str, n: int, tokenizer, task):
    from conlst_ray.data.readers import read_corpus
    from conlst_ray.training.batches import encode_table

    table, _ = read_corpus(spec, lang, max_rows=n, task=task)
    return encode_table(tokenizer, table, 128)


def timed_steps(algorithm, runner, steps: int, warmup: int = 2) -> float:
    """Seconds per optimizer step over ``steps`` steps after ``warmup``."""
    algorithm.begin_epoch(0)
    batches = iter(algorithm.batches(0, 0))
    for _ in range(warmup):
        algorithm.train_step(runner, next(batches))
    t0 = time.perf_counter()
    for _ in range(steps):
        algorithm.train_step(runner, next(batches))
    return (time.perf_counter() - t0) / steps


def measure_path(name: str, overrides: list, data: dict, steps: int, log) -> dict:
    """Rows/s of each stage's step and of scoring for one configuration."""
    from conlst_ray.algorithm.base import SourceTraining
    from conlst_ray.algorithm.conl import CoNL
    from conlst_ray.algorithm.self_training import SelfTraining
    from conlst_ray.config import load_config
    from conlst_ray.models.encoder import apply_freezing, build_model
    from conlst_ray.training.frozen_cache import FrozenRun, compute_states
    from conlst_ray.training.inference import predict_proba
    from conlst_ray.training.loop import StepModule

    cfg = load_config(REPO / "tune_configs" / "xnli_e5_small_cpu.yaml", COMMON + overrides)
    tok, source, target = data["tokenizer"], data["source"], data["target"]
    source.frozen = target.frozen = None
    out: dict = {}
    torch.manual_seed(0)
    model = build_model(cfg.model, tok)
    apply_freezing(model, cfg.model)
    runner = StepModule(model, cfg.resources.precision)
    if cfg.model.cache_frozen:
        t0 = time.perf_counter()
        source.frozen = compute_states(model, source, FrozenRun(cfg.model.freeze_layers, "cpu",
                                                                cfg.resources.precision))
        target.frozen = compute_states(model, target, FrozenRun(cfg.model.freeze_layers, "cpu",
                                                                cfg.resources.precision))
        out["frozen_states_rows_per_s"] = (len(source) + len(target)) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    q = predict_proba(model, target, tok.pad_token_id, 64, "cpu", cfg.resources.precision)
    out["scoring_rows_per_s"] = len(target) / (time.perf_counter() - t0)
    model.train()
    out["source_pairs_per_s"] = cfg.source.batch_size / timed_steps(
        SourceTraining(model, cfg, tok, "cpu", source), runner, steps)
    out["conl_anchors_per_s"] = cfg.conl.batch_size / timed_steps(
        CoNL(model, cfg, tok, "cpu", source, target, q), runner, steps)
    ssl = SelfTraining(model, cfg, tok, "cpu", source, target)
    # a self-training step trains on ssl.batch_size selected target rows and as many source rows
    out["ssl_rows_per_s"] = cfg.ssl.batch_size / timed_steps(ssl, runner, steps)
    log(f"[bench] {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()))
    return out


def bare_step(layers_frozen: int, data: dict, steps: int, log) -> float:
    """The limit: the upper layers, pooling and a linear head on precomputed
    states of a length-sorted batch, cross-entropy, backward, AdamW; pairs/s."""
    from conlst_ray.config import load_config
    from conlst_ray.models.encoder import apply_freezing, build_model
    from conlst_ray.models.frozen import run_upper
    from conlst_ray.training.batches import batch_of
    from conlst_ray.training.frozen_cache import FrozenRun, compute_states

    cfg = load_config(REPO / "tune_configs" / "xnli_e5_small_cpu.yaml",
                      COMMON + FAST + [f"model.freeze_layers={layers_frozen}"])
    tok, source = data["tokenizer"], data["source"]
    model = build_model(cfg.model, tok)
    apply_freezing(model, cfg.model)
    source.frozen = compute_states(model, source, FrozenRun(layers_frozen, "cpu", "bf16"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    order = np.argsort(source.lengths(), kind="stable")
    batches = [order[i:i + 32] for i in range(0, len(order) - 31, 32)]
    rng = np.random.default_rng(0)
    picked = [batches[i] for i in rng.permutation(len(batches))[:steps + 2]]
    ready = [(batch_of(source, b, tok.pad_token_id), torch.as_tensor(source.labels[b])) for b in picked]
    model.train()

    def step(batch, labels):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = run_upper(model.encoder, layers_frozen, batch["frozen_hidden"], batch["attention_mask"])
            mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            logits = model.classifier((h * mask).sum(1) / mask.sum(1))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for batch, labels in ready[:2]:
        step(batch, labels)
    t0 = time.perf_counter()
    for batch, labels in ready[2:]:
        step(batch, labels)
    rate = 32 * steps / (time.perf_counter() - t0)
    log(f"[bench] bare step, {layers_frozen} frozen: {rate:.1f} pairs/s")
    return rate


def zero_shot_accuracy(model_dir: str, rows_per_lang: int, langs: list, log) -> dict:
    """xnli_test_a accuracy (%) per language with fp32 and with the fast path."""
    from conlst_ray.config import load_config
    from conlst_ray.data.task import Task
    from conlst_ray.models.encoder import ConlstEncoder, read_meta
    from conlst_ray.models.tokenizers import open_tokenizer
    from conlst_ray.training.frozen_cache import FrozenRun, compute_states
    from conlst_ray.training.inference import accuracy_by_language, predict_proba

    tok = open_tokenizer(model_dir)
    task = Task.of(load_config(None, []).data.task)  # NLI, the labels of XNLI
    out: dict = {}
    for name, precision, frozen in (("fp32", "fp32", 0), ("fast path (bf16, 8 frozen and cached)", "bf16", 8)):
        model = ConlstEncoder.load(model_dir)
        model.frozen_layers = frozen
        accs, t0, n = {}, time.perf_counter(), 0
        for lang in langs:
            rows = pairs(f"xnli_tsv:{DATA}/xnli_test_a/test-{{lang}}.tsv", lang, rows_per_lang, tok, task)
            if frozen:
                rows.frozen = compute_states(model, rows, FrozenRun(frozen, "cpu", precision))
            q = predict_proba(model, rows, tok.pad_token_id, 64, "cpu", precision)
            accs.update({k: 100 * v for k, v in accuracy_by_language(q, rows).items()})
            n += len(rows)
        out[name] = {"accuracy": accs, "rows_per_s": n / (time.perf_counter() - t0)}
        log(f"[bench] zero-shot {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in accs.items()))
    assert read_meta(model_dir), f"{model_dir}: not a conlst_ray model"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per stage and path")
    parser.add_argument("--rows", type=int, default=512, help="source and target rows read")
    parser.add_argument("--model", help="a trained model folder: also zero-shot accuracy on xnli_test_a")
    parser.add_argument("--test-rows", type=int, default=835, help="xnli_test_a rows per language for --model")
    parser.add_argument("--langs", nargs="+", default=["en", "ar", "de", "fr", "sw", "ur", "zh"])
    parser.add_argument("--out", default=str(REPO / "docs" / "cpu_real_encoder.json"))
    args = parser.parse_args(argv)
    from conlst_ray.config import load_config
    from conlst_ray.data.task import Task
    from conlst_ray.models.encoder import build_tokenizer

    torch.set_num_threads(2)
    cfg = load_config(REPO / "tune_configs" / "xnli_e5_small_cpu.yaml", COMMON)
    tok = build_tokenizer(cfg.model, cfg.data)
    task = Task.of(cfg.data.task)
    data = {"tokenizer": tok,
            "source": pairs(f"xnli_mt_tsv:{DATA}/mnli/multinli.train.{{lang}}.tsv", "en", args.rows, tok, task),
            "target": pairs(f"xnli_tsv:{DATA}/xnli/dev-{{lang}}.tsv", "fr", args.rows, tok, task)}
    data["target"].labels[:] = -1  # unlabelled
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(out.read_text()) if args.steps == 0 and out.is_file() else {}
    if args.steps:  # --steps 0: the accuracy part only, beside the speeds already in --out
        result = {"rows": args.rows, "steps": args.steps, "torch_threads": torch.get_num_threads(),
                  "paths": {name: measure_path(name, ov, data, args.steps, print) for name, ov in PATHS.items()},
                  "bare_step_pairs_per_s": {n: bare_step(n, data, args.steps * 3, print) for n in (6, 8)}}
        out.write_text(json.dumps(result, indent=1))  # written before the accuracy part, which is long
    if args.model:
        result["zero_shot_xnli_test_a"] = zero_shot_accuracy(args.model, args.test_rows, args.langs, print)
        out.write_text(json.dumps(result, indent=1))
    if "paths" in result:
        print(summary(result))
    return 0


def summary(result: dict) -> str:
    """The side-by-side table with the ratios the targets are about."""
    before = result["paths"]["before (fp32, 6 frozen)"]
    keys = ["source_pairs_per_s", "conl_anchors_per_s", "ssl_rows_per_s", "scoring_rows_per_s"]
    lines = ["| path | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, res in result["paths"].items():
        lines.append(f"| {name} | " + " | ".join(f"{res[k]:.1f} ({res[k] / before[k]:.2f}x)" for k in keys) + " |")
    for n, rate in result["bare_step_pairs_per_s"].items():
        fast = result["paths"][f"fast path, {n} frozen"]["source_pairs_per_s"]
        lines.append(f"| bare step, {n} frozen | {rate:.1f} (fast source step = {fast / rate:.2f}x of it) | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
