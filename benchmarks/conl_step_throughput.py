"""CoNL training throughput: the stage under Ray Train with one worker vs the
same step in a plain PyTorch loop in one process, same model, same batches,
same threads. Printed side by side with their ratio (target >= 0.9). Also
side by side: the plain loop with K fresh negatives per anchor (the old
``conl.negative_bank=anchor``) vs one bank per step shared by the anchors
(``step``, the default), in anchors/s and encoder rows per step.

    python -m benchmarks.conl_step_throughput [--hidden 256 --layers 4]

Ray Train's figure is its steady state (from the per-step timestamps of
steps.jsonl, first step excluded) and, separately, end to end including the
worker group's start-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from conlst_ray.commands.common import init_ray
from conlst_ray.config import load_config, with_values
from conlst_ray.models.encoder import build_model, build_tokenizer
from conlst_ray.pipeline.rundir import RunDir, stage_files
from conlst_ray.ray_jobs.train import fit_plain, fit_stage
from conlst_ray.ray_jobs.worker import StageInputs

REPO = Path(__file__).resolve().parents[1]



def plain_loop(cfg, model_dir: str, corpus: Path, labels: Path, threads: int, device: str = "cpu",
               stats: dict | None = None) -> float:
    """The CoNL stage's algorithm object in the one step loop, without Ray
    (``fit_plain``): same plan, same step, same precision. Anchors per
    second; ``stats`` receives the mean encoder rows per step (two dropout
    views of each anchor + the step's distinct negatives)."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        steps_file = stage_files(tmp).steps
        fit_plain("conl", cfg, model_dir, corpus, StageInputs(target_corpus=str(corpus), pseudo_labels=str(labels)),
                  device=device, steps_file=steps_file)
        records = [json.loads(x) for x in steps_file.read_text().splitlines()]
    if stats is not None:
        stats["rows_per_step"] = float(np.mean([2 * cfg.conl.batch_size + r["bank_size"] for r in records]))
    return (len(records) - 1) * cfg.conl.batch_size / (records[-1]["time"] - records[0]["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import ray

    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    cfg = load_config(None, [f"model.tiny.hidden_size={args.hidden}", f"model.tiny.num_layers={args.layers}",
                             f"model.tiny.num_heads={max(1, args.hidden // 64)}",
                             f"model.tiny.intermediate_size={4 * args.hidden}",
                             f"resources.cpus_per_worker={args.threads}", "data.synthetic.n_unlabelled=1000",
                             "conl.batch_size=32", "conl.num_negatives=8", "source.epochs=2"])
    init_ray(num_cpus=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp, run = Path(tmp), RunDir(tmp)  # laid out as a run
        tok = build_tokenizer(cfg.model, cfg.data)
        torch.manual_seed(0)
        init_dir = str(build_model(cfg.model, tok).save(run.model("init"), tok))
        # a trained source model: an untrained one predicts one class everywhere,
        # and its anchors' complementary classes would have no negatives at all
        fit_stage("source", cfg, run.stage_files("source"), init_dir, num_workers=0)
        model_dir = str(run.model("source"))
        manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, run.corpus_dir, cfg.data)
        pseudo_label(model_dir, CachedCorpus(run.corpus_dir, manifests), tmp / "pl", cfg)
        t0 = time.time()
        fit_stage("conl", with_values(cfg, {"resources.trainer": "ray_train"}), run.stage_files("conl"), model_dir,
                  StageInputs(target_corpus=str(run.corpus_dir), pseudo_labels=str(tmp / "pl")), num_workers=1)
        wall = time.time() - t0
        steps = [json.loads(line) for line in run.stage_files("conl").steps.read_text().splitlines()]
        ray_steady = (len(steps) - 1) * cfg.conl.batch_size / (steps[-1]["time"] - steps[0]["time"])
        ray_e2e = len(steps) * cfg.conl.batch_size / wall
        ray.shutdown()
        before_cfg = with_values(cfg, {"conl.negative_bank": "anchor", "conl.complementary": "one"})
        before_stats, after_stats = {}, {}
        before = plain_loop(before_cfg, model_dir, run.corpus_dir, tmp / "pl", args.threads, stats=before_stats)
        plain = plain_loop(cfg, model_dir, run.corpus_dir, tmp / "pl", args.threads, stats=after_stats)
    print(f"model: tiny BERT {args.layers} layers, hidden {args.hidden}; CoNL batch 32 anchors, K=8, "
          f"CLCS batch 32; {len(steps)} steps; torch threads {args.threads}")
    print(f"plain loop, K fresh negatives per anchor (before): {before:8.1f} anchors/s, "
          f"{before_stats['rows_per_step']:.0f} encoder rows/step")
    print(f"plain loop, one shared bank per step (after)     : {plain:8.1f} anchors/s, "
          f"{after_stats['rows_per_step']:.0f} encoder rows/step")
    print(f"ratio after / before = {plain / before:.2f}")
    print(f"plain PyTorch loop, one process   : {plain:8.1f} anchors/s")
    print(f"Ray Train, 1 worker, steady state : {ray_steady:8.1f} anchors/s")
    print(f"Ray Train, 1 worker, incl. start-up ({wall:.0f}s): {ray_e2e:8.1f} anchors/s")
    print(f"ratio steady / plain = {ray_steady / plain:.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
