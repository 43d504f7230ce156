"""``python -m conlst_ray.pseudo_label``: pseudo-labels for every target
language on Ray Data (see ray_jobs/pseudo_label.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from conlst_ray.commands.common import add_ray_address, add_recompute, base_parser, entry_point, init_ray, parse
from conlst_ray.config.stages import SOURCE
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.reporting.tables import to_markdown


def build_parser():
    parser = base_parser("python -m conlst_ray.pseudo_label",
                         "Pseudo-label the unlabelled target corpora of every target language with a model; "
                         "writes Parquet partitioned by language (id, lang, pseudo_label, confidence, q). "
                         "Reruns skip finished shards made by the same model, corpus and settings; output of "
                         "another model is refused (or redone with --recompute).")
    parser.add_argument("--model-dir", help="model to label with (default: RUN/source/model)")
    parser.add_argument("--out", help="output folder (default: RUN/pseudo_labels/cli)")
    add_recompute(parser)
    add_ray_address(parser)
    return parser


def summary(table, labels=("entailment", "neutral", "contradiction")) -> str:
    """Per language: rows, mean confidence and the share given each of the task's labels."""
    rows = []
    langs = np.asarray(table.column("lang").to_pylist())
    predicted = np.asarray(table.column("pseudo_label").to_pylist())
    conf = np.asarray(table.column("confidence").to_pylist())
    for lang in dict.fromkeys(langs.tolist()):
        sel = langs == lang
        share = np.bincount(predicted[sel], minlength=len(labels)) / sel.sum()
        rows.append([f"{lang}", f"{sel.sum()}", f"{conf[sel].mean():.3f}", *(f"{s:.1%}" for s in share)])
    return to_markdown(["lang", "rows", "mean confidence", *labels], rows).rstrip("\n")


@entry_point
def main(argv=None) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2
    model_dir = Path(args.model_dir) if args.model_dir else RunDir.of(cfg).model(SOURCE)
    if not (model_dir / "config.json").is_file():
        print(f"error: no model at {model_dir}; pass --model-dir or run python -m conlst_ray.run first",
              file=sys.stderr)
        return 2
    run = RunDir.create(cfg, resume=True, recompute=args.recompute)
    init_ray(args.address)
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label, read_pseudo_labels

    corpus = run.target_corpus
    manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, corpus, cfg.data,
                               cfg.resources.cpus_per_task)
    out = Path(args.out) if args.out else run.pseudo_labels("cli")
    pseudo_label(str(model_dir), CachedCorpus(Path(corpus), manifests), out, cfg, recompute=args.recompute)
    print(f"\npseudo-labels under {out}\n")
    print(summary(read_pseudo_labels(out), cfg.data.task.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
