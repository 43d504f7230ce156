"""``python -m conlst_ray.run``: the whole CoNLST pipeline, stage by stage.

source fine-tuning (or model.source_checkpoint) -> pseudo-labels -> CoNL ->
(back-translation) -> self-training x T -> per-language tables of the
zero-shot, CoNL and CoNLST models, calibration before -> after CoNL and the
cost per stage (see ``conlst_ray.report``). ``--resume`` skips finished stages.

A thin layer over the library call ``reporting/library.run(cfg)``: it reads
the config from the command line and prints the report, or the one line of
a ``RunError``.
"""

from __future__ import annotations

import sys

from conlst_ray.commands.common import add_ray_address, add_recompute, base_parser, guarded, parse
from conlst_ray.config.stages import CONL, SOURCE
from conlst_ray.reporting import library


def build_parser():
    parser = base_parser("python -m conlst_ray.run",
                         "Run the CoNLST pipeline (source fine-tuning -> pseudo-labels -> CoNL -> "
                         "self-training -> per-language tables) on the embedded benchmark by default.")
    parser.add_argument("--resume", action="store_true", help="continue the run directory, skipping finished stages")
    parser.add_argument("--stop-after", choices=(SOURCE, CONL),
                        help="stop after this stage (resume later with --resume)")
    add_recompute(parser)
    add_ray_address(parser)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(_main, argv)


def _main(argv) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2
    result = library.run(cfg, resume=args.resume, recompute=args.recompute, address=args.address,
                         stop_after=args.stop_after, command=argv)
    if result.report:
        print("\n" + result.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
