"""``python -m conlst_ray.tune``: search CoNLST's hyperparameters with Ray Tune.

With no arguments: the embedded default (synthetic benchmark, tiny BERT,
local Ray) with a small built-in search space. The source model and the
initial pseudo-labels are computed once, before the trials; each trial runs
CoNL and self-training from them; ASHA stops weak trials after CoNL.

Outputs under ``--storage-path/<run_name>``: best_config.yaml (runnable with
``python -m conlst_ray.run --config``), trials.{md,csv},
best_accuracy_{dev,test}.{md,csv} (per language, with the zero-shot row),
calibration.{md,csv} and calibration_hist.png for the best trial's CoNL
model, and Ray Tune's own files (TensorBoard event files per trial).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conlst_ray import quiet
from conlst_ray.commands.common import add_ray_address, base_parser, entry_point, init_ray, parse, printable
from conlst_ray.config import ConfigError, load_config, save_config
from conlst_ray.config.search_space import apply, parse_search_space
from conlst_ray.config.stages import CONL
from conlst_ray.pipeline.preflight import preflight
from conlst_ray.pipeline.rundir import RunDir, SearchDir, trial_of_model
from conlst_ray.pipeline.search import tokenize_for_trials
from conlst_ray.pipeline.stages import SharedWork, shared_work
from conlst_ray.reporting.labelling_job import TargetPredictions
from conlst_ray.reporting.report import accuracy_tables, calibration_report
from conlst_ray.reporting.tables import to_markdown, write_table
from conlst_ray.storage import mirror as stored
from conlst_ray.storage.files import atomic_write_text

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


DEFAULT_SPACE = {
    "conl.gamma": {"type": "uniform", "low": 0.7, "high": 0.95},
    "conl.num_negatives": {"type": "choice", "values": [4, 8]},
    # how hard CoNL moves the model decides whether it calibrates at all (docs/RESULTS.md)
    "conl.lr": {"type": "loguniform", "low": 5.0e-5, "high": 1.0e-3},
    "ssl.lr": {"type": "loguniform", "low": 1.0e-4, "high": 5.0e-4},
}
SMOKE = ["data.synthetic.n_source_train=600", "data.synthetic.n_unlabelled=200", "data.synthetic.n_dev=90",
         "data.synthetic.n_test=90", "source.epochs=1", "ssl.iterations=1", "tune.num_samples=2"]


def build_parser():
    parser = base_parser("python -m conlst_ray.tune",
                         "Search gamma, lambda, K and the learning rates with Ray Tune (ASHA), sharing the "
                         "source model and pseudo-labels across trials. No arguments: the embedded default.")
    parser.add_argument("--num-samples", type=int, help="trials to sample (overrides tune.num_samples)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny data and 2 trials: a quick end-to-end check")
    parser.add_argument("--storage-path", help="where the search lives (default: OUTPUT_DIR/tune)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search from its storage path")
    add_ray_address(parser)
    return parser


def trials_table(results, cfg: "Config", keys) -> tuple[list, list]:
    """One row per trial: its parameters, the metric (%) after the last stage
    it reached, and how it ended (finished, stopped early by ASHA, failed)."""
    header = ["trial", *keys, f"{cfg.tune.metric} (%)", "stage", "status"]
    last_stage = 2 if cfg.ssl.enabled else 1
    rows = []
    for r in results:
        metrics = r.metrics or {}
        stage = metrics.get("stage")
        status = ("error" if r.error else "stopped early (ASHA)" if stage is not None and stage < last_stage
                  else "finished")
        rows.append([Path(r.path).name if r.path else "?", *[r.config.get(k) for k in keys],
                     metrics.get(cfg.tune.metric), stage, status])
    return header, rows


def expected_trials(cfg: "Config", dims) -> int:
    """Trials a complete search holds: num_samples times the grid's size."""
    grid = 1
    for d in dims:
        grid *= len(d.values) if d.kind == "grid" else 1
    return cfg.tune.num_samples * grid


def interrupted(results, cfg: "Config", dims) -> bool:
    """True when Tune stopped before every trial ended (Ctrl+C, a killed driver)."""
    ended = results.num_terminated + results.num_errors
    return ended < len(results) or len(results) < expected_trials(cfg, dims)


class Phases:
    """Wall-clock seconds of each phase of the search, printed as each ends,
    so that a slower default run shows where its time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.time()
        yield
        self.seconds[name] = round(time.time() - t0, 1)
        print(f"[time] {name}: {self.seconds[name]:.1f} s")

    def table(self, trial_rows: list) -> str:
        rows = [[name, s] for name, s in self.seconds.items()] + trial_rows
        return "Where the time went (s):\n\n" + to_markdown(["phase", "seconds"], rows, digits=1)


def trial_stage_seconds(results) -> list:
    """[trial: stage, seconds] of every stage a trial ran (its last report
    carries the seconds of each stage so far)."""
    rows = []
    for r in results:
        for key, label in (("seconds_conl", "CoNL"), ("seconds_ssl", "self-training")):
            if key in (r.metrics or {}):
                rows.append([f"{Path(r.path).name if r.path else '?'}: {label}", r.metrics[key]])
    return rows


def write_trials(header, rows, folder: Path) -> str:
    return write_table(folder / "trials", header, rows, digits=None)


@entry_point
def main(argv=None) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2

    extra = (SMOKE if args.smoke_test else []) + (
        [f"tune.num_samples={args.num_samples}"] if args.num_samples is not None else [])
    try:
        if extra:  # --num-samples is checked like the key it sets (>= 1)
            cfg = load_config(args.config, list(args.overrides) + extra)
        space = cfg.tune.search_space or DEFAULT_SPACE
        dims = parse_search_space(space, cfg)  # fails here, before Ray starts or any trial runs
    except ConfigError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2

    preflight(cfg)  # corpora, model paths, checkpoint, MT coverage: before Ray starts
    location = args.storage_path or stored.join(cfg.output_dir, "tune")
    storage = stored.mirror(location) if stored.is_uri(location) else Path(location).resolve()
    search, phases = SearchDir(storage, cfg.run_name or "search"), Phases()
    with phases("Ray start-up"):
        init_ray(args.address, cfg=cfg)
    from conlst_ray.pipeline.search import trial
    from conlst_ray.ray_jobs.tune import run_search

    run, shared = search_shared_work(cfg, search, phases)
    with phases("trials (Ray Tune)"):
        results = run_search(cfg, dims, trial, {"shared": shared, "trials_dir": str(search.trials)}, search.storage,
                             search.name, resume=args.resume)
    keys = [d.key for d in dims]
    md = write_trials(*trials_table(results, cfg, keys), search.root)
    if interrupted(results, cfg, dims):
        print(f"\nTrials so far:\n\n{md}\nThe search was interrupted before every trial ended; continue it with "
              f"the same arguments plus --resume (state: {search.root}).", file=sys.stderr)
        return 130
    best = results.get_best_result(metric=cfg.tune.metric, mode=cfg.tune.mode)
    best_cfg = apply(cfg, {k: best.config[k] for k in keys})
    save_config(best_cfg, search.best_config)
    with phases("report"):
        table, calibration = report_best(best_cfg, run, search, shared.source_model, best.metrics["model_dir"])
    print(f"\nTrials ({cfg.tune.metric}, after the last stage each reached):\n\n{md}")
    print("Best configuration (" + ", ".join(f"{k}={best.config[k]!r}" for k in keys) + f"), saved to "
          f"{search.best_config}\n")
    best_model = stored.location(best.metrics["model_dir"])  # with object storage: its URI
    print(f"Best trial's model: {best_model}\n")
    atomic_write_text(search.best_record, json.dumps({"model_dir": best_model,
                                                      "trial": trial_of_model(best.metrics["model_dir"]).root.name,
                                                      cfg.tune.metric: best.metrics.get(cfg.tune.metric)}, indent=2))
    print(phases.table(trial_stage_seconds(results)))
    atomic_write_text(search.phases, json.dumps(phases.seconds, indent=2))
    stored.publish(search.root)  # object storage: the search's tables and figures beside Tune's state
    print(table)
    if calibration:
        print(f"Best trial, {calibration}\nHistograms: {search.root / 'calibration_hist.png'}")
    return 0


def search_shared_work(cfg: "Config", search: SearchDir, phases: Phases) -> tuple[RunDir, SharedWork]:
    """The work every trial shares, once per search (and reused by --resume):
    the pipeline's own first stages (``pipeline.stages.shared_work``) in the
    search's shared run, then the trials' token files; returns that run and
    what a trial starts from."""
    shared_cfg = apply(cfg, {"run_name": search.shared_run_name, "output_dir": str(search.storage)})
    run = RunDir.create(shared_cfg, resume=True)
    _, shared = shared_work(shared_cfg, run, phase=phases)
    with phases("shared: trial tokens"):
        tokenize_for_trials(shared_cfg, shared)
    return run, shared


def report_best(best_cfg, run: RunDir, search: SearchDir, source_model: str, best_model: str) -> tuple[str, str]:
    """The best trial against the zero-shot model (per-language tables) and
    its CoNL model against the shared initial pseudo-labels (Table 4, Fig. 3)."""
    models = {"zero-shot": source_model, "best trial": best_model}
    with quiet():  # the trials' models were scored in the search: no line to repeat
        table = accuracy_tables(best_cfg, search.root, models, prefix="best_")
    best_trial = trial_of_model(best_model)
    predictions = TargetPredictions(best_cfg, run, search.analysis(best_trial.root.name))
    calibration = calibration_report(best_cfg, run, str(best_trial.model(CONL)), search.root,
                                     predictions=predictions)
    return table, calibration

if __name__ == "__main__":
    sys.exit(main())
