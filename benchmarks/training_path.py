"""The training path on CPU, measured in one full pipeline run of the
embedded default:

    python benchmarks/training_path.py          # ~5 min on 2 cores; nothing else should run

(1) Tokenise once: every corpus row's tokenisations, counted. The Ray tasks
    of ray_jobs/tokens.py log each shard they tokenise
    (CONLST_RAY_TOKENIZE_LOG); ``encode_table`` -- the driver's
    tokenisation, used by the final report to score each model on dev and
    test -- is wrapped here and counted too. Target: each training row
    (source, target, dev of the per-epoch evaluation) tokenised once.
(2) The source stage under Ray Train (one worker) vs a plain PyTorch loop
    over the same model, the same token files, the same global batches and
    the same step function, with as many torch threads as the worker has
    CPUs: steady-state optimizer steps per second (the first 5 steps and
    Ray Train's start-up excluded). Target >= 0.9x.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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
    for corpus in sorted((run_dir / "corpus").iterdir()):
        for lang_dir in sorted(corpus.glob("lang=*")):
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in lang_dir.glob("shard-*.parquet"))
            out.append((f"{corpus.name}/{lang_dir.name[5:]}", rows, done[corpus.name, lang_dir.name[5:]]))
    out.append(("report (driver): dev/test scoring per model, after-CoNL relabelling", None,
                sum(driver_rows.values())))
    return out


def plain_source_loop(cfg, run_dir: Path, threads: int) -> float:
    """ray_jobs/train.py's source epoch without Ray: steps per second."""
    import torch

    from conlst_ray.algorithm.steps import source_step
    from conlst_ray.model import ConlstEncoder
    from conlst_ray.ray_jobs.stage_data import prepare_stage_tokens, read_stage_data
    from conlst_ray.ray_jobs.worker import global_plan
    from conlst_ray.token_rows import tokenizer_stamp
    from conlst_ray.training import batch_of, linear_warmup_schedule, make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    init = str(run_dir / "init" / "model")
    tokens = prepare_stage_tokens("source", cfg, init, run_dir / "corpus", None, None, None, log=lambda *_: None)
    source, _ = read_stage_data({"tokens": tokens}, tokenizer_stamp(init, cfg.data.max_length))
    model = ConlstEncoder.load(init).train()
    pad = source.meta["pad_token_id"]
    plan = global_plan(len(source), cfg.source.batch_size, cfg.seed, 0)
    optimizer = make_optimizer(model, cfg.source.lr, cfg.source.weight_decay)
    scheduler = linear_warmup_schedule(optimizer, len(plan), cfg.source.warmup_ratio)
    times = []
    for gbatch in plan:
        loss, _ = source_step(model, batch_of(source, gbatch, pad), torch.as_tensor(source.labels[gbatch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.source.max_grad_norm)
        optimizer.step()
        scheduler.step()
        times.append(time.time())
    times = times[WARMUP:]
    return (len(times) - 1) / (times[-1] - times[0])


def within_epoch_rate(steps: list[dict]) -> float:
    """Steps per second over the intervals between two steps of one epoch:
    the gaps at epoch ends (per-epoch evaluation, checkpoint) are work the
    plain loop does not do, so they are left out of the comparison."""
    gaps = [b["time"] - a["time"] for a, b in zip(steps, steps[1:]) if a["epoch"] == b["epoch"]]
    return len(gaps) / sum(gaps)


def main() -> int:
    import conlst_ray.training as training
    from conlst_ray import run as run_mod
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
        accuracy = (run_dir / "results" / "accuracy_test.md").read_text()
        cfg = load_config(run_dir / "config.yaml", [])
        steps = [json.loads(x) for x in (run_dir / "source" / "steps.jsonl").read_text().splitlines()][WARMUP:]
        ray_rate, stage_rate = within_epoch_rate(steps), (len(steps) - 1) / (steps[-1]["time"] - steps[0]["time"])
        import ray

        ray.shutdown()
        threads = max(1, int(cfg.resources.cpus_per_worker))
        plain_rate = plain_source_loop(cfg, run_dir, threads)
    print(f"pipeline run of the embedded default (seed 0): {wall:.0f}s; test accuracy (%):\n\n{accuracy}")
    print("| corpus | rows | rows tokenised | times per row |\n|---|---|---|---|")
    for name, n, done in rows:
        print(f"| {name} | {n if n is not None else '-'} | {done} | "
              f"{f'{done / n:.2f}' if n else '-'} |")
    print(f"\n| source stage, batch {cfg.source.batch_size}, {threads} thread(s) | steps/s |\n|---|---|")
    print(f"| Ray Train, 1 worker | {ray_rate:.2f} |\n| plain PyTorch loop | {plain_rate:.2f} |")
    print(f"| Ray Train, 1 worker, whole stage (with the per-epoch evaluation and checkpoint) | {stage_rate:.2f} |")
    print(f"\nRay Train / plain loop: {ray_rate / plain_rate:.2f}x (target >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
