"""Every throughput ratio of the GPU path, side by side in one run, as JSON.

    python -m benchmarks.gpu_suite --out $OUT/gpu_suite.json                 # one GPU, <= 8 min
    python -m benchmarks.gpu_suite --model tiny --parts pseudo_label         # the CPU part, here

Parts (``--parts``, default all):

- ``pseudo_label``: real XNLI dev text of 15 languages repeated to ``--rows``
  (default 1,000,000), ingested and tokenised as the pipeline does; then the
  Ray Data job against a bare loop over the same token rows (length-sorted
  micro-batches, the same model, precision and batch size, in this
  process). The job's start-up (first rows out) is measured apart from its
  steady state (rows after the first result / the time they took).
- ``source`` and ``conl``: the stage under Ray Train (one worker) against
  the same algorithm object in the same step loop without Ray
  (``fit_plain``), steady state after 5 warm-up steps.

On a GPU every part also records utilisation (``nvidia-smi`` every 0.5 s)
and peak memory. The JSON holds every figure and ratio, the device, the
versions and the command; a part's figures are written as soon as it ends
(a run cut at its time limit keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from conlst_ray.commands.common import init_ray
from conlst_ray.config import load_config
from conlst_ray.pipeline.rundir import RunDir, stage_files

REPO = Path(__file__).resolve().parents[1]


SHARED = REPO.parent / "shared" / "data"
XNLI = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]


class GpuSampler:
    """Utilisation (%) and memory (MiB) of GPU 0 every 0.5 s, from nvidia-smi."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = None

    def __enter__(self):
        if torch.cuda.is_available():
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "500"],
                                         stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        util = np.array([s[0] for s in self.samples])
        return {"gpu_util_mean": float(util.mean()), "gpu_busy_share": float((util > 0).mean()),
                "gpu_mem_peak_mib": float(max(s[1] for s in self.samples))}


def model_overrides(name: str) -> list[str]:
    if name == "tiny":  # CPU: a small BERT over mBERT's vocabulary (the real tokenizer, real text)
        return [f"model.tokenizer={SHARED}/vocab/bert-base-multilingual-cased-vocab.txt",
                "model.tiny.hidden_size=128", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
                "model.tiny.intermediate_size=512", "model.tiny.max_position=128"]
    return [f"model.name_or_path={name}", "model.tokenizer=null"]


def repeated_xnli(folder: Path, rows: int) -> str:
    """XNLI dev pairs of 15 languages repeated to ``rows`` in all, one Parquet
    file per language; returns the corpus spec."""
    from conlst_ray.data.readers import read_languages

    table, _ = read_languages(f"xnli_tsv:{SHARED}/xnli/dev-{{lang}}.tsv", XNLI)
    folder.mkdir(parents=True, exist_ok=True)
    per_lang = rows // len(XNLI)
    langs = table.column("lang").to_numpy(zero_copy_only=False)
    for lang in XNLI:
        part = table.filter(pa.array(langs == lang)).select(["text", "text_pair", "label"])
        idx = np.arange(per_lang) % part.num_rows
        pq.write_table(part.take(pa.array(idx)), folder / f"{lang}.parquet")
    return f"parquet:{folder}/{{lang}}.parquet"


def bare_loop(model_dir: str, tokens: Path, langs: list, cfg, device: str) -> float:
    """Rows/s of forward passes over the token rows in this process."""
    from conlst_ray.data.token_files import open_token_rows
    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.models.tokenizers import tokenizer_stamp
    from conlst_ray.training.inference import predict_proba

    rows = open_token_rows(tokens, langs, tokenizer_stamp(model_dir, cfg.data.max_length))
    model = ConlstEncoder.load(model_dir)
    size = cfg.resources.inference_batch_size
    warm = np.arange(min(len(rows), 4 * size))
    pad = rows.meta["pad_token_id"]
    predict_proba(model, rows, pad, size, device, cfg.resources.precision, index=warm)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    predict_proba(model, rows, pad, size, device, cfg.resources.precision)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(rows) / (time.perf_counter() - t0)


def part_pseudo_label(cfg, model_dir: str, tmp: Path, rows: int, device: str) -> dict:
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus

    spec = repeated_xnli(tmp / "text", rows)
    data = cfg.data.model_copy(update={"target_train": spec, "shard_rows": 20000})
    t0 = time.time()
    manifests = ingest_corpora(spec, XNLI, tmp / "pl_corpus", data)
    t1 = time.time()
    tokens = tokenize_cached_corpus(tmp / "pl_corpus", manifests, model_dir, cfg.data.max_length)
    t2 = time.time()
    progress: list[tuple[float, int]] = []
    with GpuSampler() as gpu:
        t3 = time.time()
        report = pseudo_label(model_dir, CachedCorpus(tmp / "pl_corpus", manifests), tmp / "labels", cfg,
                              on_progress=lambda r: progress.append((time.time(), r.rows)))
        t4 = time.time()
    first_t, first_rows = progress[0]
    steady = (report.rows - first_rows) / max(t4 - first_t, 1e-9)
    bare = bare_loop(model_dir, tokens, XNLI, cfg, device)
    return {"rows": report.rows, "languages": len(XNLI), "ingest_s": t1 - t0, "tokenize_s": t2 - t1,
            "job_s": t4 - t3, "job_startup_s": first_t - t3, "job_rows_per_s_incl_startup": report.rows / (t4 - t3),
            "job_rows_per_s_steady": steady, "bare_rows_per_s": bare, "ratio_steady_vs_bare": steady / bare,
            "ratio_incl_startup_vs_bare": report.rows / (t4 - t3) / bare, **gpu.summary()}


def target_labels(cfg, model_dir: str, tmp: Path) -> Path:
    """The CoNL part's target rows (XNLI dev of data.target_langs) and their pseudo-labels."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, tmp / "target", cfg.data)
    pseudo_label(model_dir, CachedCorpus(tmp / "target", manifests), tmp / "target_labels", cfg)
    return tmp / "target_labels"


def steady(files, batch: int) -> float:
    """Examples/s of a stage's steps file (its StageFiles), after 5 warm-up steps."""
    steps = [json.loads(x) for x in files.steps.read_text().splitlines()][5:]
    return (len(steps) - 1) * batch / (steps[-1]["time"] - steps[0]["time"])


def part_stage(stage: str, cfg, model_dir: str, tmp: Path, device: str, labels: Path | None) -> dict:
    """A stage under Ray Train (1 worker) vs the plain loop, examples/s."""
    from conlst_ray.ray_jobs.train import fit_plain, fit_stage
    from conlst_ray.ray_jobs.worker import StageInputs

    corpus = RunDir(tmp).corpus_dir
    inputs = (StageInputs(target_corpus=str(tmp / "target"), pseudo_labels=str(labels), corpus_dir=str(corpus))
              if stage == "conl" else StageInputs(corpus_dir=str(corpus)))
    batch = cfg.conl.batch_size if stage == "conl" else cfg.source.batch_size
    ray_files, plain_files = stage_files(tmp / f"{stage}_ray"), stage_files(tmp / f"{stage}_plain")
    with GpuSampler() as gpu:
        fit_stage(stage, cfg, ray_files, model_dir, inputs)
    ray_rate = steady(ray_files, batch)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    plain_files.root.mkdir(exist_ok=True)
    fit_plain(stage, cfg, model_dir, corpus, inputs, device=device, steps_file=plain_files.steps)
    plain_rate = steady(plain_files, batch)
    out = {"ray_per_s": ray_rate, "plain_per_s": plain_rate, "ratio_ray_vs_plain": ray_rate / plain_rate,
           "unit": "anchors" if stage == "conl" else "pairs", **gpu.summary()}
    if device == "cuda":
        out["plain_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="multilingual-e5-small", help="a model name, or tiny (CPU)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="pseudo-labelled rows, 15 languages")
    parser.add_argument("--source-rows", type=int, default=8000)
    parser.add_argument("--parts", nargs="+", default=["source", "pseudo_label", "conl"],
                        choices=["source", "pseudo_label", "conl"])
    parser.add_argument("--out", default=str(REPO / "docs" / "gpu_suite.json"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    args = parser.parse_args()
    import ray

    from conlst_ray.models.encoder import build_model, build_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device == "cuda"
    cfg = load_config(None, model_overrides(args.model) + [
        "data.source_lang=en", "data.target_langs=[fr,de,zh,ur]",
        f"data.source_train=xnli_mt_tsv:{SHARED}/mnli/multinli.train.en.tsv",
        f"data.target_train=xnli_tsv:{SHARED}/xnli/dev-{{lang}}.tsv",
        "data.source_dev=null", "data.target_dev=null", "data.target_test=null",
        f"data.max_source_rows={args.source_rows}", "data.eval_during_training=false", "source.epochs=1",
        f"resources.use_gpu={str(gpu).lower()}", "resources.num_workers=1", "resources.trainer=ray_train",
        f"resources.cpus_per_worker={4 if gpu else args.threads}",
        # CPU: 1 core left for the read tasks
        f"resources.gpus_per_actor={1 if gpu else 0}", f"resources.cpus_per_actor={2 if gpu else 1}",
        f"resources.torch_threads={args.threads}", f"resources.inference_batch_size={256 if gpu else 64}",
        f"resources.tokenize_tasks={4 if gpu else 1}", f"resources.precision={'bf16' if gpu else 'fp32'}"])
    torch.set_num_threads(args.threads)
    result = {"command": " ".join(["python", "benchmarks/gpu_suite.py", *sys.argv[1:]]),
              "device": torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores",
              "torch": torch.__version__, "ray": ray.__version__, "model": args.model, "parts": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    init_ray(num_cpus=None if gpu else args.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            tok = build_tokenizer(cfg.model, cfg.data)
            model_dir = str(build_model(cfg.model, tok, cfg.data.task.labels).save(RunDir(tmp).model("init"), tok))
            trained = model_dir
            for part in [p for p in ("source", "pseudo_label", "conl") if p in args.parts]:
                t0 = time.time()
                if part == "pseudo_label":
                    figures = part_pseudo_label(cfg, trained, tmp, args.rows, device)
                else:
                    labels = target_labels(cfg, trained, tmp) if part == "conl" else None
                    figures = part_stage(part, cfg, trained, tmp, device, labels)
                if part == "source":  # later parts read a trained model (CoNL needs confident labels)
                    trained = str(stage_files(tmp / "source_ray").model)
                figures["seconds"] = time.time() - t0
                result["parts"][part] = figures
                out.write_text(json.dumps(result, indent=1))
                print(part, json.dumps(figures), flush=True)
    finally:
        ray.shutdown()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
