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
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from conlst_ray.cli import add_debug, entry_point
from conlst_ray.reporting import read_rows, write_language_table, write_table
from conlst_ray.rundir import RunDir


# -- per-language accuracy (Tables 1-2) ------------------------------------------------------

def evaluate(cfg, model_dir: str, split: str = "dev", log=print, by_class: dict | None = None) -> dict:
    """Accuracy per language of one model on a labelled split (in the driver);
    ``by_class``, when given, receives the recall of each of the task's
    labels over the target-language rows."""
    from conlst_ray.analysis import recall_by_class
    from conlst_ray.model import ConlstEncoder
    from conlst_ray.training.inference import accuracy_by_language, default_device, predict_proba

    data, pad_id = _eval_rows(cfg, model_dir, split, log)
    if data is None:
        return {}
    q = predict_proba(ConlstEncoder.load(model_dir), data, pad_id, cfg.source.eval_batch_size, default_device(),
                      cfg.resources.precision)
    if by_class is not None:
        target = np.isin(np.asarray(data.langs), list(cfg.data.target_langs))
        by_class.update(zip(cfg.data.task.labels, recall_by_class(q.argmax(-1)[target], data.labels[target],
                                                                  len(cfg.data.task.labels))))
    return accuracy_by_language(q, data)


_EVAL_ROWS: dict = {}


def _eval_rows(cfg, model_dir: str, split: str, log):
    """A labelled split, tokenised once per report for every model that
    shares a tokenizer (zero-shot, CoNL and CoNLST do), not once per model."""
    from transformers import AutoTokenizer

    from conlst_ray.data.corpora import eval_corpus
    from conlst_ray.provenance import digest
    from conlst_ray.token_rows import tokenizer_stamp
    from conlst_ray.training.batches import encode_table

    key = (split, tokenizer_stamp(model_dir, cfg.data.max_length), digest(dataclasses.asdict(cfg.data)))
    if key not in _EVAL_ROWS:
        table = eval_corpus(cfg.data, split, log)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if len(_EVAL_ROWS) >= 4:
            _EVAL_ROWS.clear()
        _EVAL_ROWS[key] = (None if table is None else encode_table(tokenizer, table, cfg.data.max_length),
                           tokenizer.pad_token_id)
    return _EVAL_ROWS[key]


def evaluate_per_language(cfg, models: dict, split: str, log=print) -> dict:
    """per_language mode: each language scored by its own model; the source
    column is the mean over those models."""
    from dataclasses import replace

    accs, source = {}, []
    for lang, path in models.items():
        res = evaluate(replace(cfg, data=replace(cfg.data, target_langs=[lang])), path, split, log)
        if lang in res:
            accs[lang] = res[lang]
        if cfg.data.source_lang in res:
            source.append(res[cfg.data.source_lang])
    if source:
        accs[cfg.data.source_lang] = sum(source) / len(source)
    return accs


def accuracy_tables(cfg, out: Path, models: dict, log=print, prefix: str = "") -> str:
    """Write ``out/<prefix>accuracy_{dev,test}.{md,csv}``; ``models``: row
    name -> model directory (or lang -> directory)."""
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    text = []
    for split in ("dev", "test"):
        by_class: dict = {}
        results = {name: evaluate_per_language(cfg, path, split, log) if isinstance(path, dict)
                   else evaluate(cfg, path, split, log, by_class.setdefault(name, {})) for name, path in models.items()}
        results = {k: v for k, v in results.items() if v}
        if results:
            md = write_language_table(results, langs, cfg.data.source_lang, out / f"{prefix}accuracy_{split}")
            text.append(f"Per-language accuracy (%), {split}:\n\n{md}")
            labels = list(cfg.data.task.labels)
            rows = [[name] + [100 * recall[label] for label in labels] for name, recall in by_class.items() if recall]
            if rows:
                md = write_table(out / f"{prefix}class_accuracy_{split}", ["model"] + labels, rows)
                text.append(f"Accuracy (%) per gold label, target languages, {split}:\n\n{md}")
    return "\n".join(text)


# -- the models a run directory holds --------------------------------------------------------

def finished_models(cfg, run: RunDir) -> dict:
    """Row name -> model directory (per_language mode: -> {lang: directory})
    for every finished stage of the run."""
    models: dict = {}
    if cfg.model.source_checkpoint or run.is_done("source"):
        models["zero-shot"] = cfg.model.source_checkpoint or str(run.root / "source" / "model")
    final = "CoNLST" if cfg.conl.enabled else "self-training"
    for name, stage in (("CoNL", "conl"), (final, "ssl")):
        if cfg.data.target_mode == "per_language":
            found = {lang: str(run.root / "targets" / lang / stage / "model") for lang in cfg.data.target_langs
                     if RunDir(run.root / "targets" / lang).is_done(stage)}
            if found:
                models[name] = found
        elif run.is_done(stage):
            models[name] = str(run.root / stage / "model")
    return models


# -- calibration (Table 4, Fig. 3-4) ---------------------------------------------------------

def _predictions_after_conl(cfg, run: RunDir, conl: str | dict, out: Path, log) -> Path:
    """The CoNL model's pseudo-labels for the target corpus, by the same Ray
    Data job that made the source model's. Cached in ``out``, per language
    tied to the model weights that made it: a new CoNL model relabels (an
    analysis cache is recomputed, never refused)."""
    from conlst_ray.ray_jobs.corpus_cache import read_manifest
    from conlst_ray.ray_jobs.pseudo_label import pseudo_label

    corpus = run.root / "corpus" / "target_train"
    for lang, model_dir in _by_language(conl):
        langs = [lang] if lang else list(cfg.data.target_langs)
        manifests = {code: read_manifest(corpus, code) for code in langs}
        pseudo_label(model_dir, corpus, manifests, out, cfg.resources, cfg.data.max_length, log, recompute=True)
    return out


# Up to this many target rows the CoNL model labels them in the driver: a Ray
# Data job's start-up costs more (measured on 8,000 rows: about 10 s for the
# job, under 1 s in the driver).
DRIVER_INFERENCE_ROWS = 20_000


def _labels_in_driver(cfg, corpus, conl: str | dict):
    """id, lang, pseudo_label, confidence of every corpus row under the CoNL
    model (per_language mode: each language under its own model)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from transformers import AutoTokenizer

    from conlst_ray.model import ConlstEncoder
    from conlst_ray.training.inference import default_device, predict_proba
    from conlst_ray.training.batches import encode_table

    parts = []
    for lang, model_dir in _by_language(conl):
        rows = corpus if lang is None else corpus.filter(pc.equal(corpus.column("lang"), lang))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        q = predict_proba(ConlstEncoder.load(model_dir), encode_table(tokenizer, rows, cfg.data.max_length),
                          tokenizer.pad_token_id, cfg.source.eval_batch_size, default_device(),
                          cfg.resources.precision)
        parts.append(pa.table({"id": rows.column("id"), "lang": rows.column("lang"),
                               "pseudo_label": q.argmax(-1).astype("int64"), "confidence": q.max(-1)}))
    return pa.concat_tables(parts)


def _by_language(conl: str | dict) -> list[tuple]:
    """(language, model directory) pairs; language None = one model for all."""
    return list(conl.items()) if isinstance(conl, dict) else [(None, conl)]


def calibration_report(cfg, run: RunDir, conl, out: Path, log=print, after_dir: Path | None = None) -> str | None:
    """Write calibration.{md,csv} and calibration_hist.png under ``out``,
    comparing ``run``'s initial pseudo-labels with those of the ``conl``
    model (a directory, or lang -> directory); None (and a log line) when
    there is no CoNL model or the target corpus has no gold labels."""
    from conlst_ray.analysis import (band_transitions, calibration_markdown, calibration_rows, class_markdown,
                                     class_rows, join_with_gold, transitions_markdown)
    from conlst_ray.figures import class_histograms, confidence_histograms
    from conlst_ray.ray_jobs.sharded import read_outputs

    before_dir = run.root / "pseudo_labels" / "source"
    if not conl or not run.is_done("pseudo_labels"):
        log("[report] calibration skipped: the run has no CoNL model or no initial pseudo-labels")
        return None
    corpus = read_outputs(run.root / "corpus" / "target_train")
    if not any(label >= 0 for label in corpus.column("label").to_pylist()):
        log("[report] calibration skipped: the target corpus carries no gold labels")
        return None
    if corpus.num_rows <= DRIVER_INFERENCE_ROWS:
        after_table = _labels_in_driver(cfg, corpus, conl)
    else:
        after_table = read_outputs(_predictions_after_conl(
            cfg, run, conl, after_dir or run.root / "analysis" / "pseudo_labels_conl", log))
    langs = list(cfg.data.target_langs)
    before_table = read_outputs(before_dir)
    write_table(out / "calibration_transitions", *band_transitions(before_table, after_table, corpus, langs),
                markdown=transitions_markdown)
    before, after = join_with_gold(before_table, corpus), join_with_gold(after_table, corpus)
    name = "CoNL" if cfg.conl.use_contrastive else "NL (cross-entropy only)"
    md = write_table(out / "calibration", *calibration_rows(before, after, langs),
                     markdown=lambda h, r: calibration_markdown(h, r, name))
    labels = list(cfg.data.task.labels)
    panels = [("before " + name, before), ("after " + name, after)]
    confidence_histograms(panels, langs, out / "calibration_hist.png", len(labels))
    by_class = write_table(out / "calibration_by_class", *class_rows(before, after, langs, labels),
                           markdown=lambda h, r: class_markdown(h, r, name))
    class_histograms(panels, labels, out / "calibration_hist_by_class.png")
    return md + "\n" + by_class


# -- cost per stage ------------------------------------------------------------------------

STAGES = (("source", "source"), ("pseudo_labels", None), ("conl", "conl"), ("backtranslation", None),
          ("ssl", "ssl"))


def stage_costs(cfg, run: RunDir, out: Path) -> str | None:
    """Seconds and throughput of every finished stage (training stages count
    examples as optimiser steps x batch size; their seconds include Ray
    Train's start-up)."""
    roots = [("", run.root)] + [(f"{lang}/", run.root / "targets" / lang) for lang in cfg.data.target_langs]
    rows = []
    for prefix, root in roots:
        for stage, batch_of in STAGES:
            done = root / stage / "DONE.json"
            if not done.is_file():
                continue
            info = json.loads(done.read_text())
            seconds = float(info.get("seconds", float("nan")))
            if batch_of:
                work = int(info.get("step", 0)) * getattr(cfg, batch_of).batch_size
                unit = "examples"
            else:
                work, unit = int(info.get("rows", 0)), "rows"
            rows.append([prefix + stage, seconds, work, unit, work / seconds if seconds else float("nan")])
    if not rows:
        return None
    return write_table(out / "stage_costs", ["stage", "seconds", "work", "unit", "per second"], rows)


def full_report(cfg, run: RunDir, models: dict | None = None, log=print, calibration: bool = True) -> str:
    """Every table and figure of one run under RUN/results; returns the text."""
    models = models if models is not None else finished_models(cfg, run)
    out = run.stage("results")
    parts = [accuracy_tables(cfg, out, models, log)]
    if calibration:
        md = calibration_report(cfg, run, models.get("CoNL"), out, log)
        if md:
            parts.append(md + f"\nHistograms: {out / 'calibration_hist.png'}\n")
    costs = stage_costs(cfg, run, out)
    if costs:
        parts.append(f"Cost per stage:\n\n{costs}")
    return "\n".join(parts)


# -- ablations (Table 3) -----------------------------------------------------------------

def final_row(run_dir: Path) -> str:
    """The last model of a run's table: its CoNLST (or self-training, or CoNL) row."""
    return read_rows(run_dir / "results" / "accuracy_dev.csv")[-1]["model"]


def read_avg(run_dir: Path, split: str, row: str) -> float:
    path = run_dir / "results" / f"accuracy_{split}.csv"
    for r in read_rows(path):
        if r["model"] == row:
            return float(r["avg"])
    raise ValueError(f"{path}: no row named {row!r}")


def parse_ablation_spec(spec: str) -> tuple[str, Path, str | None]:
    """'NAME=RUN_DIR[:ROW]' (or a bare RUN_DIR, named after itself)."""
    name, _, rest = spec.partition("=") if "=" in spec else (None, "", spec)
    path, _, row = rest.partition(":")
    run_dir = Path(path)
    if not (run_dir / "results" / "accuracy_dev.csv").is_file():
        raise ValueError(f"--ablation {spec!r}: {run_dir}/results/accuracy_dev.csv not found "
                         f"(run python -m conlst_ray.report {run_dir} first)")
    return name or run_dir.name, run_dir, row or None


def ablation_table(specs: list[str], stem: Path) -> str:
    """Table 3 layout: a row per variant, its average target accuracy on dev
    and test; runs sharing a name (seeds) give mean and sample std."""
    groups: dict[str, list[tuple[Path, str]]] = {}
    for spec in specs:
        name, run_dir, row = parse_ablation_spec(spec)
        groups.setdefault(name, []).append((run_dir, row or final_row(run_dir)))
    header = ["variant", "runs", "dev avg", "dev std", "test avg", "test std"]
    rows = []
    for name, runs in groups.items():
        cells = [name, len(runs)]
        for split in ("dev", "test"):
            vals = [read_avg(d, split, row) for d, row in runs
                    if (d / "results" / f"accuracy_{split}.csv").is_file()]
            cells += [float(np.mean(vals)) if vals else float("nan"),
                      float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")]
        rows.append(cells)
    return write_table(stem, header, rows)


# -- command line --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m conlst_ray.report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per-language tables (paper Tables 1-2), calibration bands before -> after CoNL (Table 4) "
                    "with clean/noisy histograms (Fig. 3-4) and the cost per stage of a run, under "
                    "RUN_DIR/results; or, with --ablation, the ablation table (Table 3) over several runs.",
        epilog=__doc__)
    parser.add_argument("run_dir", nargs="?", help="a run directory of python -m conlst_ray.run")
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
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if not args.run_dir:
        parser.error("give RUN_DIR or --ablation")
    from conlst_ray.config import ConfigError, load_config

    run = RunDir(args.run_dir)
    try:
        cfg = load_config(run.root / "config.yaml")
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {run.root} is not a run directory: {exc}", file=sys.stderr)
        return 2
    if not args.no_calibration:
        from conlst_ray.cli import init_ray

        init_ray(args.address)
    print(full_report(cfg, run, calibration=not args.no_calibration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
