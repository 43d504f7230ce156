"""``python -m conlst_ray.run``: the whole CoNLST pipeline, stage by stage.

source fine-tuning (or model.source_checkpoint) -> pseudo-labels -> CoNL ->
(back-translation) -> self-training x T -> per-language tables of the
zero-shot, CoNL and CoNLST models. ``--resume`` skips finished stages.
"""

from __future__ import annotations

import sys

from conlst_ray.cli import add_ray_address, base_parser, init_ray, parse
from conlst_ray.data.corpora import eval_corpus
from conlst_ray.model import ConlstEncoder
from conlst_ray.reporting import write_language_table
from conlst_ray.rundir import RunDir
from conlst_ray.training import accuracy_on

STAGES = ("source", "pseudo_labels", "conl", "ssl")


def build_parser():
    parser = base_parser("python -m conlst_ray.run",
                         "Run the CoNLST pipeline (source fine-tuning -> pseudo-labels -> CoNL -> "
                         "self-training -> per-language tables) on the embedded benchmark by default.")
    parser.add_argument("--resume", action="store_true", help="continue the run directory, skipping finished stages")
    parser.add_argument("--stop-after", choices=("conl",), help="stop after this stage (resume later with --resume)")
    add_ray_address(parser)
    return parser


def evaluate(cfg, model_dir: str, split: str = "dev", log=print) -> dict:
    """Accuracy per language of one model on a labelled split (in the driver)."""
    from transformers import AutoTokenizer

    table = eval_corpus(cfg.data, split, log)
    if table is None:
        return {}
    return accuracy_on(ConlstEncoder.load(model_dir), AutoTokenizer.from_pretrained(model_dir), table,
                       cfg.data.max_length, cfg.source.eval_batch_size)


def evaluate_per_language(cfg, models: dict, split: str, log=print) -> dict:
    """per_language mode: each language scored by its own model; the source
    column is the mean over those models."""
    from dataclasses import replace

    accs, source = {}, []
    for lang, path in models.items():
        cfg_l = replace(cfg, data=replace(cfg.data, target_langs=[lang]))
        res = evaluate(cfg_l, path, split, log)
        if lang in res:
            accs[lang] = res[lang]
        if cfg.data.source_lang in res:
            source.append(res[cfg.data.source_lang])
    if source:
        accs[cfg.data.source_lang] = sum(source) / len(source)
    return accs


def report(cfg, run: RunDir, models: dict, log=print) -> str:
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    out = []
    for split in ("dev", "test"):
        results = {name: evaluate_per_language(cfg, path, split, log) if isinstance(path, dict)
                   else evaluate(cfg, path, split, log) for name, path in models.items()}
        results = {k: v for k, v in results.items() if v}
        if results:
            md = write_language_table(results, langs, cfg.data.source_lang, run.stage("results") / f"accuracy_{split}")
            out.append(f"Per-language accuracy (%), {split}:\n\n{md}")
    return "\n".join(out)


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
    print("\n" + report(cfg, run, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
