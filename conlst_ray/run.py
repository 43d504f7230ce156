"""``python -m conlst_ray.run``: the whole CoNLST pipeline, stage by stage.

source fine-tuning (or model.source_checkpoint) -> pseudo-labels -> CoNL ->
(back-translation) -> self-training x T -> per-language tables of the
zero-shot, CoNL and CoNLST models, calibration before -> after CoNL and the
cost per stage (see ``conlst_ray.report``). ``--resume`` skips finished stages.
"""

from __future__ import annotations

import sys

from conlst_ray.cli import add_ray_address, base_parser, init_ray, parse
from conlst_ray.report import full_report
from conlst_ray.rundir import RunDir

STAGES = ("source", "pseudo_labels", "conl", "ssl")


def build_parser():
    parser = base_parser("python -m conlst_ray.run",
                         "Run the CoNLST pipeline (source fine-tuning -> pseudo-labels -> CoNL -> "
                         "self-training -> per-language tables) on the embedded benchmark by default.")
    parser.add_argument("--resume", action="store_true", help="continue the run directory, skipping finished stages")
    parser.add_argument("--stop-after", choices=("source", "conl"), help="stop after this stage (resume later with --resume)")
    add_ray_address(parser)
    return parser


def main(argv=None) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2
    run = RunDir.create(cfg, resume=args.resume)
    print(f"[run] {run.root}")
    init_ray(args.address)
    from conlst_ray.pipeline import run_pipeline

    models = run_pipeline(cfg, run, stop_after=args.stop_after)
    if args.stop_after:
        print(f"[run] stopped after {args.stop_after}; continue with --resume")
        return 0
    print("\n" + full_report(cfg, run, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
