"""The training path on CPU, measured in one full pipeline run of the
embedded default:

    python -m benchmarks.training_path          # ~5 min on 2 cores; nothing else should run

(1) Tokenise once: every corpus row's tokenisations, counted. The Ray tasks
    of ray_jobs/tokens.py log each shard they tokenise
    (CONLST_RAY_TOKENIZE_LOG); ``encode_table`` -- the driver's
    tokenisation, used by the final report to score each model on dev and
    test -- is wrapped here and counted too. Target: each training row
    (source, target, dev of the per-epoch evaluation) tokenised once.
(2) The source stage under Ray Train (one worker) vs the same algorithm
    object in the same step loop without Ray (``fit_plain``: same model,
    token files, batches and prefetch), with as many torch threads as the
    worker has CPUs: steady-state optimizer steps per second (the first 5 steps and
    Ray Train's start-up excluded). Target >= 0.9x.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from conlst_ray.pipeline.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]

WARMUP = 5


def count_tokenisations(log: Path, run_dir: Path, driver_rows: Counter) -> list[tuple]:
    """corpus -> (rows in the corpus, rows tokenised)."""
    import pyarrow.parquet as pq

    done = Counter()
    for line in log.read_text().splitlines():
        _, rows, src = line.split(" ", 2)
        src = Path(src)
        done[src.parent.parent.name, src.parent.name[5:]] += int(rows)
    out = []
    for corpus in sorted((RunDir(run_dir).corpus_dir).iterdir()):
        for lang_dir in sorted(corpus.glob("lang=*")):
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in lang_dir.glob("shard-*.parquet"))
            out.append((f"{corpus.name}/{lang_dir.name[5:]}", rows, done[corpus.name, lang_dir.name[5:]]))
    out.append(("report (driver): dev/test scoring per model, after-CoNL relabelling", None,
                sum(driver_rows.values())))
    return out


def plain_source_loop(cfg, run_dir: Path, threads: int) -> list[float]:
    """The source stage's algorithm object in the one step loop, without Ray
    (``ray_jobs.train.fit_plain``): steps per second within each epoch."""
    import torch

    from conlst_ray.ray_jobs.train import fit_plain

    torch.set_num_threads(threads)
    steps_file = run_dir / "plain_source_steps.jsonl"
    run = RunDir(run_dir)
    fit_plain("source", cfg, str(run.model("init")), run.corpus_dir, steps_file=steps_file)
    records = [json.loads(x) for x in steps_file.read_text().splitlines()]
    return epoch_rates(records[WARMUP:])


def epoch_rates(steps: list[dict]) -> list[float]:
    """Steps per second within each epoch (intervals between two steps of
    one epoch): the gaps at epoch ends (per-epoch evaluation, checkpoint)
    are work the plain loop does not do, so they are left out."""
    rates = []
    for epoch in sorted({r["epoch"] for r in steps}):
        times = [r["time"] for r in steps if r["epoch"] == epoch]
        if len(times) > 1:
            rates.append((len(times) - 1) / (times[-1] - times[0]))
    return rates


def main() -> int:
    import conlst_ray.training.batches as training
    from conlst_ray.commands import run as run_mod
    from conlst_ray.config import load_config
    from conlst_ray.ray_jobs.tokens import LOG_ENV

    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__)
        return 0
    driver_rows: Counter = Counter()
    original = training.encode_table

    def counted(tokenizer, table, max_length):
        driver_rows[table.num_rows] += table.num_rows
        return original(tokenizer, table, max_length)

    training.encode_table = counted
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log = tmp / "tokenised.log"
        log.touch()
        os.environ[LOG_ENV] = str(log)  # before Ray starts: its workers inherit it
        args = [f"output_dir={tmp}", "run_name=bench", "seed=0"]
        t0 = time.time()
        assert run_mod.main(args) == 0
        wall = time.time() - t0
        run_dir = tmp / "bench"
        rows = count_tokenisations(log, run_dir, driver_rows)
        accuracy = (RunDir(run_dir).results / "accuracy_test.md").read_text()
        cfg = load_config(RunDir(run_dir).config_file, [])
        steps = [json.loads(x) for x in (RunDir(run_dir).stage_files("source").steps).read_text().splitlines()][WARMUP:]
        ray_rates, stage_rate = epoch_rates(steps), (len(steps) - 1) / (steps[-1]["time"] - steps[0]["time"])
        import ray

        ray.shutdown()
        threads = max(1, int(cfg.resources.cpus_per_worker))
        plain_rates = plain_source_loop(cfg, run_dir, threads)
    ray_rate, plain_rate = statistics.median(ray_rates), statistics.median(plain_rates)
    print(f"pipeline run of the embedded default (seed 0): {wall:.0f}s; test accuracy (%):\n\n{accuracy}")
    print("| corpus | rows | rows tokenised | times per row |\n|---|---|---|---|")
    for name, n, done in rows:
        print(f"| {name} | {n if n is not None else '-'} | {done} | "
              f"{f'{done / n:.2f}' if n else '-'} |")
    print(f"\n| source stage, batch {cfg.source.batch_size}, {threads} thread(s) | steps/s |\n|---|---|")
    print(f"| Ray Train, 1 worker, median of {len(ray_rates)} epochs | {ray_rate:.2f} "
          f"({', '.join(f'{r:.1f}' for r in ray_rates)}) |")
    print(f"| plain PyTorch loop, median of {len(plain_rates)} epochs | {plain_rate:.2f} "
          f"({', '.join(f'{r:.1f}' for r in plain_rates)}) |")
    print(f"| Ray Train, 1 worker, whole stage (with the per-epoch evaluation and checkpoint) | {stage_rate:.2f} |")
    print(f"\nRay Train / plain loop: {ray_rate / plain_rate:.2f}x (target >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
