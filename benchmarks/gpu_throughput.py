"""Throughput on a GPU, side by side in one run: each Ray stage against a
plain bf16 PyTorch loop of the same model and batches.

    python -m benchmarks.gpu_throughput [--model multilingual-e5-small] [--langs fr de zh ur]

- source stage: Ray Train (1 GPU worker, steady state from steps.jsonl) vs
  the same algorithm object in the same step loop without Ray (``fit_plain``);
- CoNL step: Ray Train vs ``benchmarks/conl_step_throughput.plain_loop``;
- pseudo-labelling: the Ray Data job (tokenise tasks -> GPU actor) vs a bare
  bf16 forward loop over the same rows (``training.predict_proba``);
- peak GPU memory of each plain loop and of the Ray Train workers.

Data: the English MultiNLI sample and XNLI dev text in ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.conl_step_throughput import plain_loop as conl_plain_loop
from conlst_ray.commands.common import init_ray
from conlst_ray.config import load_config
from conlst_ray.models.encoder import ConlstEncoder, build_model, build_tokenizer
from conlst_ray.models.tokenizers import tokenizer_stamp
from conlst_ray.pipeline.rundir import RunDir, stage_files
from conlst_ray.ray_jobs.train import fit_plain, fit_stage, prepare_stage_tokens
from conlst_ray.ray_jobs.worker import StageInputs, read_stage_data
from conlst_ray.training.inference import predict_proba
from conlst_ray.training.stage_files import StageFiles

REPO = Path(__file__).resolve().parents[1]


SHARED = REPO.parent / "shared" / "data"


def steady(files: StageFiles, batch: int) -> float:
    steps = [json.loads(x) for x in files.steps.read_text().splitlines()]
    steps = steps[5:]  # warm-up steps (CUDA kernels, allocator) excluded, as in the plain loops
    return (len(steps) - 1) * batch / (steps[-1]["time"] - steps[0]["time"])


def worker_peak(files: StageFiles) -> float:
    rows = [json.loads(x) for x in files.metrics.read_text().splitlines()]
    return max(r.get("gpu_peak_gib", float("nan")) for r in rows)


def stage_rows(cfg, model_dir: str, corpus: Path, target_corpus=None):
    """The token files the Ray stages made under ``corpus`` (cached)."""
    inputs = StageInputs(target_corpus=target_corpus and str(target_corpus), corpus_dir=str(corpus))
    tokens = prepare_stage_tokens("conl", cfg, model_dir, inputs)
    return read_stage_data(tokens, tokenizer_stamp(model_dir, cfg.data.max_length))


def plain_source(cfg, model_dir: str, corpus: Path) -> tuple[float, float]:
    """The source stage's algorithm object in the one step loop without Ray
    (``fit_plain``) on the GPU: pairs/s after 5 warm-up steps, peak GiB."""
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        files = stage_files(tmp)
        fit_plain("source", cfg, model_dir, corpus, device="cuda", steps_file=files.steps)
        rate = steady(files, cfg.source.batch_size)
    return rate, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--langs", nargs="+", default=["fr", "de", "zh", "ur"])
    parser.add_argument("--source-rows", type=int, default=8000)
    args = parser.parse_args()
    import ray

    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    xnli = f"xnli_tsv:{SHARED}/xnli/dev-{{lang}}.tsv"
    cfg = load_config(None, [
        f"model.name_or_path={args.model}", "model.tokenizer=null", "data.source_lang=en",
        f"data.target_langs=[{','.join(args.langs)}]",
        f"data.source_train=xnli_mt_tsv:{SHARED}/mnli/multinli.train.en.tsv", f"data.target_train={xnli}",
        "data.source_dev=null", "data.target_dev=null", "data.target_test=null",
        f"data.max_source_rows={args.source_rows}", "data.eval_during_training=false",
        "source.epochs=1", "resources.use_gpu=true", "resources.num_workers=1", "resources.cpus_per_worker=4",
        "resources.gpus_per_actor=1", "resources.cpus_per_actor=2", "resources.inference_batch_size=256",
        "resources.tokenize_tasks=4", "resources.precision=bf16"])
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        tmp, run = Path(tmp), RunDir(tmp)  # laid out as a run
        tok = build_tokenizer(cfg.model, cfg.data)
        model_dir = str(build_model(cfg.model, tok).save(run.model("init"), tok))
        out = {}
        fit_stage("source", cfg, run.stage_files("source"), model_dir)
        source = run.stage_files("source")
        out["source_ray"], out["source_ray_peak"] = steady(source, 32), worker_peak(source)
        out["source_plain"], out["source_plain_peak"] = plain_source(cfg, model_dir, run.corpus_dir)
        trained = str(run.model("source"))
        manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, run.corpus_dir, cfg.data)
        t0 = time.time()
        report = pseudo_label(trained, CachedCorpus(run.corpus_dir, manifests), tmp / "pl", cfg)
        out["pl_ray"], out["pl_rows"] = report.rows / (time.time() - t0), report.rows
        _, target = stage_rows(cfg, trained, run.corpus_dir, run.corpus_dir)
        model = ConlstEncoder.load(trained).cuda()
        predict_proba(model, target, tok.pad_token_id, 256, "cuda", "bf16")  # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        predict_proba(model, target, tok.pad_token_id, 256, "cuda", "bf16")
        torch.cuda.synchronize()
        out["pl_plain"] = len(target) / (time.time() - t0)
        del model
        conl = run.stage_files("conl")
        fit_stage("conl", cfg, conl, trained,
                  StageInputs(target_corpus=str(run.corpus_dir), pseudo_labels=str(tmp / "pl")))
        out["conl_ray"], out["conl_ray_peak"] = steady(conl, 32), worker_peak(conl)
        ray.shutdown()
        torch.cuda.reset_peak_memory_stats()
        stats = {}
        out["conl_plain"] = conl_plain_loop(cfg, trained, run.corpus_dir, tmp / "pl", 8, "cuda", stats)
        out["conl_plain_peak"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; ray {ray.__version__}; "
          f"model {args.model}, bf16 autocast; batch 32; targets {args.langs}")
    for name, unit in (("source", "pairs/s"), ("conl", "anchors/s")):
        print(f"{name:7s} plain bf16 loop {out[f'{name}_plain']:8.1f} {unit} "
              f"(peak {out[f'{name}_plain_peak']:.2f} GiB) | "
              f"Ray Train {out[f'{name}_ray']:8.1f} {unit} (peak {out[f'{name}_ray_peak']:.2f} GiB) | "
              f"ratio {out[f'{name}_ray'] / out[f'{name}_plain']:.2f}")
    print(f"pseudo-labels ({out['pl_rows']} rows): bare bf16 loop {out['pl_plain']:8.1f} rows/s | Ray Data job "
          f"{out['pl_ray']:8.1f} rows/s incl. start-up | ratio {out['pl_ray'] / out['pl_plain']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
