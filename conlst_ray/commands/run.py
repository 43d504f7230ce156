"""``python -m conlst_ray.run``: the whole CoNLST pipeline, stage by stage.

source fine-tuning (or model.source_checkpoint) -> pseudo-labels -> CoNL ->
(back-translation) -> self-training x T -> per-language tables of the
zero-shot, CoNL and CoNLST models, calibration before -> after CoNL and the
cost per stage (see ``conlst_ray.report``). ``--resume`` skips finished stages.
"""

from __future__ import annotations

import shlex
import sys

from conlst_ray.commands.common import add_ray_address, add_recompute, base_parser, guarded, init_ray, parse
from conlst_ray.data.task import Task
from conlst_ray.pipeline.preflight import UserError, preflight
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.pipeline.stages import run_pipeline
from conlst_ray.reporting.report import full_report
from conlst_ray.storage import mirror as storage

STAGES = ("source", "pseudo_labels", "conl", "ssl")


def build_parser():
    parser = base_parser("python -m conlst_ray.run",
                         "Run the CoNLST pipeline (source fine-tuning -> pseudo-labels -> CoNL -> "
                         "self-training -> per-language tables) on the embedded benchmark by default.")
    parser.add_argument("--resume", action="store_true", help="continue the run directory, skipping finished stages")
    parser.add_argument("--stop-after", choices=("source", "conl"),
                        help="stop after this stage (resume later with --resume)")
    add_recompute(parser)
    add_ray_address(parser)
    return parser


def where_it_stopped(run: RunDir, argv: list) -> str:
    """The stage an interrupted run stopped in, and the command that continues it."""
    stage = next((s for s in STAGES if storage.exists(run.root / s) and not run.is_done(s)), None)
    again = ["python", "-m", "conlst_ray.run", *argv] + ([] if "--resume" in argv else ["--resume"])
    if not any(a.startswith("run_name=") for a in argv):  # a time-stamped name: say which
        again.append(f"run_name={run.root.name}")
    return (f"run {run.root} stopped" + (f" in stage {stage}" if stage else "")
            + f"; continue with: {shlex.join(again)}")


def main(argv=None, state: dict | None = None) -> int:
    """``state`` (the Python API's): receives the run directory and config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    state = {} if state is None else state
    return guarded(lambda a: _main(a, state), argv,
                   where_stopped=lambda: where_it_stopped(state["run"], argv) if "run" in state else "")


def _main(argv, state: dict) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2

    if args.resume and not cfg.run_name:
        raise UserError("--resume continues a run: name it with run_name=... (the folder below output_dir)")
    preflight(cfg)  # every input checked in seconds, before any work
    init_ray(args.address, cfg=cfg)  # and every resource: nothing written before both pass
    run = RunDir.create(cfg, resume=args.resume, recompute=args.recompute)
    state["run"], state["cfg"] = run, cfg
    print(f"[run] {run.root} ({Task.of(cfg.data.task).describe()})")

    models = run_pipeline(cfg, run, stop_after=args.stop_after)
    if args.stop_after:
        print(f"[run] stopped after {args.stop_after}; continue with --resume")
        return 0
    print("\n" + full_report(cfg, run, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
