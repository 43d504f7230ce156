"""The paper's analyses of one run, written under ``RUN_DIR/results/``
(markdown + CSV each; the command is ``python -m conlst_ray.report``, see
commands/report.py for the list of files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conlst_ray.config import with_values
from conlst_ray.config.provenance import digest
from conlst_ray.data.corpora import eval_corpus
from conlst_ray.data.token_files import tokenizer_stamp
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.reporting.analysis import (recall_by_class, band_transitions, calibration_markdown, calibration_rows, class_markdown, class_rows, join_with_gold, transitions_markdown)
from conlst_ray.reporting.tables import write_language_table, write_table


# -- per-language accuracy (Tables 1-2) ------------------------------------------------------

def evaluate(cfg, model_dir: str, split: str = "dev", log=print, by_class: dict | None = None) -> dict:
    """Accuracy per language of one model on a labelled split (in the driver);
    ``by_class``, when given, receives the recall of each of the task's
    labels over the target-language rows."""
    from conlst_ray.models.encoder import ConlstEncoder
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

    from conlst_ray.training.batches import encode_table

    key = (split, tokenizer_stamp(model_dir, cfg.data.max_length), digest(cfg.data.model_dump()))
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

    accs, source = {}, []
    for lang, path in models.items():
        res = evaluate(with_values(cfg, {"data.target_langs": [lang]}), path, split, log)
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
        models["zero-shot"] = cfg.model.source_checkpoint or str(run.model("source"))
    final = "CoNLST" if cfg.conl.enabled else "self-training"
    for name, stage in (("CoNL", "conl"), (final, "ssl")):
        if cfg.data.target_mode == "per_language":
            found = {lang: str(run.target_run(lang).model(stage)) for lang in cfg.data.target_langs
                     if run.target_run(lang).is_done(stage)}
            if found:
                models[name] = found
        elif run.is_done(stage):
            models[name] = str(run.model(stage))
    return models


# -- calibration (Table 4, Fig. 3-4) ---------------------------------------------------------

def _predictions_after_conl(cfg, run: RunDir, conl: str | dict, out: Path, log) -> Path:
    """The CoNL model's pseudo-labels for the target corpus, by the same Ray
    Data job that made the source model's. Cached in ``out``, per language
    tied to the model weights that made it: a new CoNL model relabels (an
    analysis cache is recomputed, never refused)."""
    from conlst_ray.ray_jobs.corpus_cache import read_manifest
    from conlst_ray.ray_jobs.pseudo_label import pseudo_label

    corpus = run.target_corpus
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

    from conlst_ray.models.encoder import ConlstEncoder
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
    from conlst_ray.reporting.figures import class_histograms, confidence_histograms
    from conlst_ray.ray_jobs.sharded import read_outputs

    before_dir = run.pseudo_labels("source")
    if not conl or not run.is_done("pseudo_labels"):
        log("[report] calibration skipped: the run has no CoNL model or no initial pseudo-labels")
        return None
    corpus = read_outputs(run.target_corpus)
    if not any(label >= 0 for label in corpus.column("label").to_pylist()):
        log("[report] calibration skipped: the target corpus carries no gold labels")
        return None
    if corpus.num_rows <= DRIVER_INFERENCE_ROWS:
        after_table = _labels_in_driver(cfg, corpus, conl)
    else:
        after_table = read_outputs(_predictions_after_conl(
            cfg, run, conl, after_dir or run.analysis / "pseudo_labels_conl", log))
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
    roots = [("", run.root)] + [(f"{lang}/", run.target_run(lang).root) for lang in cfg.data.target_langs]
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
