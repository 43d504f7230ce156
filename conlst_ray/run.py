"""``python -m conlst_ray.run``: the CoNLST pipeline, stage by stage.

Today it runs the source stage (cross-entropy fine-tuning on labelled source
data) and the zero-shot evaluation that prints the per-language table; the
CoNL and self-training stages plug in after it.
"""

from __future__ import annotations

import sys
import time

from conlst_ray.cli import base_parser, load_or_report
from conlst_ray.data.corpora import eval_corpus, source_corpus
from conlst_ray.model import ConlstEncoder, build_model, build_tokenizer
from conlst_ray.reporting import write_language_table
from conlst_ray.rundir import RunDir
from conlst_ray.training import (accuracy_by_language, encode_table, predict_proba, seed_everything,
                                 train_supervised)


def build_parser():
    parser = base_parser("python -m conlst_ray.run",
                         "Run the CoNLST pipeline (source fine-tuning -> zero-shot evaluation) "
                         "on the embedded benchmark by default.")
    parser.add_argument("--resume", action="store_true", help="continue the run directory, skipping finished stages")
    return parser


def stage_source(cfg, run: RunDir, tokenizer, log=print) -> str:
    """Fine-tune on labelled source data; save a HF directory under source/model."""
    out = run.stage("source")
    if run.is_done("source"):
        log(f"[source] done already: {out / 'model'}")
        return str(out / "model")
    seed_everything(cfg.seed)
    model = build_model(cfg.model, tokenizer)
    train = encode_table(tokenizer, source_corpus(cfg.data, "train", log), cfg.data.max_length)
    log(f"[source] fine-tuning on {len(train)} {cfg.data.source_lang} pairs, {cfg.source.epochs} epochs")
    t0 = time.time()
    logs = train_supervised(model, train, cfg.source, tokenizer.pad_token_id, seed=cfg.seed,
                            log_every=0, log=log)
    model.save(out / "model", tokenizer)
    run.mark_done("source", {"epochs": logs, "seconds": time.time() - t0, "rows": len(train)})
    log(f"[source] {time.time() - t0:.1f}s, final loss {logs[-1]['loss']:.4f}")
    return str(out / "model")


def evaluate(cfg, run: RunDir, model_dir: str, name: str, tokenizer, split: str = "dev", log=print) -> dict:
    table = eval_corpus(cfg.data, split, log)
    if table is None:
        log(f"[eval] no labelled {split} data: skipped")
        return {}
    model = ConlstEncoder.load(model_dir)
    data = encode_table(tokenizer, table, cfg.data.max_length)
    q = predict_proba(model, data, tokenizer.pad_token_id, cfg.source.eval_batch_size)
    return accuracy_by_language(q, data)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    run = RunDir.create(cfg, resume=args.resume)
    print(f"[run] {run.root}")
    tokenizer = build_tokenizer(cfg.model, cfg.data)
    source_dir = stage_source(cfg, run, tokenizer)
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    results = {}
    for split in ("dev", "test"):
        accs = evaluate(cfg, run, source_dir, "zero-shot", tokenizer, split)
        if accs:
            results[f"zero-shot ({split})"] = accs
    md = write_language_table(results, langs, cfg.data.source_lang, run.stage("results") / "zero_shot")
    print("\nPer-language accuracy (%), source model, zero-shot:\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
