"""``python -m conlst_ray.translate``: back-translation of the target corpora
(--mode back) or translate-train of the labelled source corpus into every
target language (--mode train), on Ray Data, cached by id."""

from __future__ import annotations

import sys
from pathlib import Path

from conlst_ray.commands.common import (
    add_ray_address,
    add_recompute,
    base_parser,
    entry_point,
    init_ray,
    parse,
    printable,
)
from conlst_ray.pipeline.rundir import RunDir


def build_parser():
    parser = base_parser("python -m conlst_ray.translate",
                         "Translate corpora with a Hugging Face seq2seq model (translation.model): "
                         "back-translation of target corpora, or translate-train of source data.")
    parser.add_argument("--mode", choices=("back", "train"), default="back",
                        help="back: target -> pivot -> target; train: source -> each target")
    parser.add_argument("--out", help="output folder (default: RUN/translations/<mode>)")
    add_recompute(parser)
    add_ray_address(parser)
    return parser


@entry_point
def main(argv=None) -> int:
    args, cfg = parse(build_parser(), argv)
    if cfg is None:
        return 2
    from conlst_ray.models.translation import TranslationConfigError, check_coverage
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.translate import CachedCorpus, TranslationJob, resolve_family, translate

    # Fail on an uncovered language before starting Ray or reading anything.
    langs = cfg.data.target_langs if args.mode == "back" else [cfg.data.source_lang] + list(cfg.data.target_langs)
    try:
        check_coverage(resolve_family(cfg.translation), langs, cfg.translation.on_uncovered)
    except TranslationConfigError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    run = RunDir.create(cfg, resume=True, recompute=args.recompute)
    init_ray(args.address)
    if args.mode == "back":
        corpus = run.target_corpus
        manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, corpus, cfg.data,
                                   cfg.resources.cpus_per_task)
    else:
        corpus = run.corpus("source_train")
        manifests = ingest_corpora(cfg.data.source_train, [cfg.data.source_lang], corpus, cfg.data,
                                   cfg.resources.cpus_per_task)
    out = Path(args.out) if args.out else run.translations(args.mode)
    job = TranslationJob(cfg.translation, CachedCorpus(Path(corpus), manifests), out, args.mode,
                         targets=tuple(cfg.data.target_langs), cpus_per_task=cfg.resources.cpus_per_task,
                         recompute=args.recompute, synthetic=(cfg.data.synthetic.seed, len(cfg.data.task.labels)))
    report, fallback = translate(job)
    print(f"\ntranslations under {out}: {report.rows} rows translated now, {len(report.skipped)} shard(s) reused")
    if fallback:
        print(f"masking-only augmentation for: {', '.join(fallback)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
