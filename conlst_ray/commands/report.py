"""``python -m conlst_ray.report RUN_DIR``: the paper's analyses for one run.

Written under ``RUN_DIR/results/`` (markdown + CSV each):

- ``accuracy_{dev,test}``: per-language accuracy of the zero-shot, CoNL and
  CoNLST models, languages as columns plus the target average (Tables 1-2);
- ``class_accuracy_{dev,test}``: accuracy per gold label (named by the task)
  over the target languages, per model;
- ``calibration`` + ``calibration_hist.png``: pseudo-label accuracy and counts
  per confidence band before -> after CoNL (Table 4) and clean/noisy
  histograms (Fig. 3; for a run with ``conl.use_contrastive=false`` the
  "after" row is negative learning with cross-entropy only, Fig. 4). Needs
  gold labels in the target corpus, used for analysis only;
- ``calibration_by_class`` + ``calibration_hist_by_class.png``: the same per
  pseudo-label class, named by the task's labels;
- ``stage_costs``: seconds and throughput of every finished stage.

``python -m conlst_ray.report --ablation NAME=RUN_DIR[:ROW] ...`` writes the
ablation table (Table 3 layout) over a set of runs; several runs under one
name (seeds) give mean and standard deviation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conlst_ray.commands.common import add_debug, entry_point, init_ray, printable
from conlst_ray.config import ConfigError, load_config
from conlst_ray.pipeline.rundir import RunDir, SearchDir, trial_of_model
from conlst_ray.reporting.ablation import ablation_table
from conlst_ray.reporting.report import full_report
from conlst_ray.storage import mirror as storage

# -- command line --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m conlst_ray.report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per-language tables (paper Tables 1-2), calibration bands before -> after CoNL (Table 4) "
                    "with clean/noisy histograms (Fig. 3-4) and the cost per stage of a run, under "
                    "RUN_DIR/results; or, with --ablation, the ablation table (Table 3) over several runs.",
        epilog=__doc__)
    parser.add_argument("run_dir", nargs="?", help="a run directory of python -m conlst_ray.run, or a search "
                        "directory (STORAGE/NAME) or trial directory (STORAGE/NAME-trials/ID) of python -m "
                        "conlst_ray.tune")
    parser.add_argument("--ablation", nargs="+", metavar="NAME=RUN_DIR[:ROW]",
                        help="runs of the ablation table; repeat a NAME for seeds; ROW picks a table row "
                             "(default: the run's last model)")
    parser.add_argument("--out", default="ablation", help="file stem of the ablation table (default: ./ablation)")
    parser.add_argument("--no-calibration", action="store_true", help="skip the calibration analysis")
    parser.add_argument("--address", default=None, help="Ray cluster to join for the analysis' pseudo-labelling")
    add_debug(parser)
    return parser


@entry_point
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ablation:
        try:
            print(ablation_table(args.ablation, Path(args.out)))
        except ValueError as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            return 2
        return 0
    if not args.run_dir:
        parser.error("give RUN_DIR or --ablation")

    folder = storage.mirror(args.run_dir)  # a run in object storage: this machine's mirror of it
    for path in (SearchDir.of(folder).best_config, RunDir(folder).config_file, RunDir(folder).trial_record):
        storage.fetch(path)
    if SearchDir.is_search(folder):
        print(search_summary(SearchDir.of(folder)))
        return 0
    run = RunDir(folder)
    trial = trial_models(run)
    try:
        cfg = load_config(run.config_file)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {run.root} is neither a run, a search nor a trial directory: {exc}", file=sys.stderr)
        return 2
    calibration = not args.no_calibration and trial is None  # a trial has no pseudo-labels of its own
    busy(run)  # before anything is read or written: results/ of a run in flight would be half of one
    if trial is None:
        from conlst_ray.pipeline.stages import stage_corpora

        init_ray(args.address)
        stage_corpora(cfg, run)  # its cached corpora whole again, if one was deleted or damaged
    elif calibration:
        init_ray(args.address)
    print(full_report(cfg, run, trial, calibration=calibration))
    return 0


def busy(run: RunDir) -> None:
    """Take the run directory's lock, or say in one line that a command is
    working in it (the report reads its stages and writes its results/)."""
    from conlst_ray.pipeline.preflight import UserError
    from conlst_ray.storage.lock import RunInUse

    try:
        run.lock()
    except RunInUse as exc:
        raise UserError(f"report: {exc}. The report reads the run's stage models and writes {run.results}: "
                        f"run it when that command has ended (a finished run writes its report itself)") from None


def search_summary(search: SearchDir) -> str:
    """A search directory of ``python -m conlst_ray.tune``: its trials, the
    best configuration and model, the best trial's tables (all written by
    the search; nothing is recomputed)."""
    import json

    folder = search.root
    parts = [f"Search {folder}"]
    for name, title in (("trials.md", "Trials"), ("best_accuracy_dev.md", "Best trial, accuracy (%), dev"),
                        ("best_accuracy_test.md", "Best trial, accuracy (%), test")):
        if (folder / name).is_file():
            parts.append(f"{title}:\n\n{(folder / name).read_text()}")
    if search.best_record.is_file():
        best = json.loads(search.best_record.read_text())
        parts.append(f"Best trial: {best['trial']}, its model: {best['model_dir']}\n"
                     f"(report it alone: python -m conlst_ray.report {trial_of_model(best['model_dir']).root})")
    parts.append(f"Best configuration: {search.best_config} (python -m conlst_ray.run --config ...)")
    return "\n\n".join(parts)


def trial_models(run: RunDir) -> dict | None:
    """A trial directory of a search (its record of the shared model): the
    shared zero-shot model and the trial's own stage models; None otherwise."""
    import json

    from conlst_ray.config.stages import TARGET
    from conlst_ray.models.encoder import WEIGHTS_FILE

    if not run.trial_record.is_file():
        return None
    models = {"zero-shot": json.loads(run.trial_record.read_text())["source_model"]}
    for stage in TARGET:  # a trial's own stages, each named as after the one before it (CoNL, CoNLST)
        if (run.model(stage.name) / WEIGHTS_FILE).is_file():
            models[stage.rows[0]] = str(run.model(stage.name))
    return models


if __name__ == "__main__":
    sys.exit(main())
