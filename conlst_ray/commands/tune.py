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

import json
import sys
from pathlib import Path

from conlst_ray.commands.common import add_ray_address, base_parser, entry_point, init_ray, parse
from conlst_ray.config import ConfigError, save_config, load_config
from conlst_ray.data import storage as stored
from conlst_ray.data.files import atomic_write_text
from conlst_ray.pipeline.preflight import preflight
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.pipeline.stages import stage_backtranslation, stage_corpora, stage_pseudo_labels, stage_source
from conlst_ray.ray_jobs.search_space import apply, parse_search_space
from conlst_ray.reporting.predictions import TargetPredictions
from conlst_ray.reporting.report import accuracy_tables, calibration_report
from conlst_ray.reporting.tables import write_table

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


def trials_table(results, cfg, keys) -> tuple[list, list]:
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


def expected_trials(cfg, dims) -> int:
    """Trials a complete search holds: num_samples times the grid's size."""
    grid = 1
    for d in dims:
        grid *= len(d.values) if d.kind == "grid" else 1
    return cfg.tune.num_samples * grid


def interrupted(results, cfg, dims) -> bool:
    """True when Tune stopped before every trial ended (Ctrl+C, a killed driver)."""
    ended = results.num_terminated + results.num_errors
    return ended < len(results) or len(results) < expected_trials(cfg, dims)


def write_trials(header, rows, folder: Path) -> str:
    return write_table(folder / "trials", header, rows, digits=None)


@entry_point
def main(argv=None) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2

    extra = (SMOKE if args.smoke_test else []) + ([f"tune.num_samples={args.num_samples}"] if args.num_samples is not None else [])
    try:
        if extra:  # --num-samples is checked like the key it sets (>= 1)
            cfg = load_config(args.config, list(args.overrides) + extra)
        space = cfg.tune.search_space or DEFAULT_SPACE
        dims = parse_search_space(space, cfg)  # fails here, before Ray starts or any trial runs
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    preflight(cfg)  # corpora, model paths, checkpoint, MT coverage: before Ray starts
    location = args.storage_path or stored.join(cfg.output_dir, "tune")
    storage = stored.mirror(location) if stored.is_uri(location) else Path(location).resolve()
    name = cfg.run_name or "search"
    init_ray(args.address, cfg=cfg)
    from conlst_ray.ray_jobs.stage_data import prepare_stage_tokens
    from conlst_ray.ray_jobs.tune import run_search

    # Shared work, once per search (and reused by --resume): RUN = storage/<name>-shared.
    shared_cfg = apply(cfg, {"run_name": f"{name}-shared", "output_dir": str(storage)})
    run = RunDir.create(shared_cfg, resume=True)
    stage_corpora(shared_cfg, run)  # every corpus read in full: a bad row stops the search before training
    source_model = stage_source(shared_cfg, run)
    corpus, labels = stage_pseudo_labels(shared_cfg, run, source_model)
    translations = stage_backtranslation(shared_cfg, run, corpus)
    # Every corpus a trial reads, tokenised here once: trials only map the files
    # (their stages would otherwise tokenise the same rows, each trial again).
    prepare_stage_tokens("ssl", shared_cfg, source_model, run.corpus_dir, str(corpus),
                         str(translations) if translations else None, list(cfg.data.target_langs))
    shared = {"source_model": source_model, "corpus": str(corpus), "pseudo_labels": str(labels),
              "translations": str(translations) if translations else None,
              "corpus_dir": str(run.corpus_dir), "trials_dir": str(storage / f"{name}-trials")}
    results = run_search(cfg, dims, shared, storage, name, resume=args.resume)

    out = storage / name
    keys = [d.key for d in dims]
    md = write_trials(*trials_table(results, cfg, keys), out)
    if interrupted(results, cfg, dims):
        print(f"\nTrials so far:\n\n{md}\nThe search was interrupted before every trial ended; continue it with "
              f"the same arguments plus --resume (state: {out}).", file=sys.stderr)
        return 130
    best = results.get_best_result(metric=cfg.tune.metric, mode=cfg.tune.mode)
    best_cfg = apply(cfg, {k: best.config[k] for k in keys})
    save_config(best_cfg, out / "best_config.yaml")
    models = {"zero-shot": source_model, "best trial": best.metrics["model_dir"]}
    table = accuracy_tables(best_cfg, out, models, log=lambda *_: None, prefix="best_")
    # the best trial's CoNL model against the shared initial pseudo-labels (Table 4, Fig. 3)
    best_trial = Path(best.metrics["model_dir"]).parent.parent
    calibration = calibration_report(best_cfg, run, str(best_trial / "conl" / "model"), out, log=print,
                                     predictions=TargetPredictions(best_cfg, run, print,
                                                                   out / "analysis" / best_trial.name))
    print(f"\nTrials ({cfg.tune.metric}, after the last stage each reached):\n\n{md}")
    print("Best configuration (" + ", ".join(f"{k}={best.config[k]!r}" for k in keys) + f"), saved to "
          f"{out / 'best_config.yaml'}\n")
    best_model = stored.location(best.metrics["model_dir"])  # with object storage: its URI
    print(f"Best trial's model: {best_model}\n")
    atomic_write_text(out / "best.json", json.dumps({"model_dir": best_model,
                                                     "trial": Path(best.metrics["model_dir"]).parent.parent.name,
                                                     cfg.tune.metric: best.metrics.get(cfg.tune.metric)}, indent=2))
    stored.publish(out)  # object storage: the search's tables and figures beside Tune's state
    print(table)
    if calibration:
        print(f"Best trial, {calibration}\nHistograms: {out / 'calibration_hist.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
