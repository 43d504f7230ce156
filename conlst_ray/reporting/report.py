"""The paper's analyses of one run, written under ``RUN_DIR/results/``
(markdown + CSV each; the command is ``python -m conlst_ray.report``, see
commands/report.py for the list of files)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from conlst_ray.config import with_values
from conlst_ray.config.provenance import digest
from conlst_ray.config.stages import CONL, PSEUDO_LABELS, SOURCE, STAGES, TARGET
from conlst_ray.data.corpora import eval_corpus
from conlst_ray.models.language_bias import correct_by_language
from conlst_ray.models.tokenizers import tokenizer_stamp
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.pipeline.stages import enabled
from conlst_ray.reporting.analysis import (
    band_transitions,
    calibration_markdown,
    calibration_rows,
    class_markdown,
    class_rows,
    join_with_gold,
    recall_by_class,
    transitions_markdown,
)
from conlst_ray.reporting.labelling_job import TargetPredictions
from conlst_ray.reporting.prior import corrected_name, prior_candidates
from conlst_ray.reporting.selection import hand_back
from conlst_ray.reporting.tables import write_language_table, write_table
from conlst_ray.storage import mirror as storage

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


# -- per-language accuracy (Tables 1-2) ------------------------------------------------------

def evaluate(cfg: "Config", model_dir: str, split: str = "dev", by_class: dict | None = None) -> dict:
    """Accuracy per language of one model on a labelled split (in the driver);
    ``by_class``, when given, receives the recall of each of the task's
    labels over the target-language rows."""
    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.training.inference import accuracy_by_language, default_device, predict_proba

    data, pad_id = _eval_rows(cfg, model_dir, split)
    if data is None:
        return {}
    model = ConlstEncoder.load(model_dir)
    _with_frozen_states(cfg, model, data)
    q = predict_proba(model, data, pad_id, cfg.source.eval_batch_size, default_device(), cfg.resources.precision)
    q = correct_by_language(q, data.langs, model.language_bias)  # a prior-corrected model: its correction per language
    if by_class is not None:
        target = np.isin(np.asarray(data.langs), list(cfg.data.target_langs))
        by_class.update(zip(cfg.data.task.labels, recall_by_class(q.argmax(-1)[target], data.labels[target],
                                                                  len(cfg.data.task.labels))))
    return accuracy_by_language(q, data)


_EVAL_ROWS: dict = {}


def _eval_rows(cfg: "Config", model_dir: str, split: str):
    """A labelled split, tokenised once per report for every model that
    shares a tokenizer (zero-shot, CoNL and CoNLST do), not once per model."""
    from conlst_ray.models.tokenizers import open_tokenizer
    from conlst_ray.training.batches import encode_table

    key = (split, tokenizer_stamp(model_dir, cfg.data.max_length), digest(cfg.data.model_dump()))
    if key not in _EVAL_ROWS:
        table = eval_corpus(cfg.data, split)
        tokenizer = open_tokenizer(model_dir)
        if len(_EVAL_ROWS) >= 4:
            _EVAL_ROWS.clear()
        _EVAL_ROWS[key] = (None if table is None else encode_table(tokenizer, table, cfg.data.max_length),
                           tokenizer.pad_token_id)
    return _EVAL_ROWS[key]


def _with_frozen_states(cfg: "Config", model, data) -> None:
    """model.cache_frozen: every stage model of a run shares its frozen part,
    so a split's frozen-layer states are computed once per report and each
    model runs only its upper layers on them."""
    if not cfg.model.cache_frozen:
        return
    from conlst_ray.training.frozen_cache import FrozenRun, compute_states, frozen_stamp
    from conlst_ray.training.inference import default_device

    n = cfg.model.freeze_layers
    stamp = frozen_stamp(model.encoder, n, cfg.resources.precision)
    if getattr(data, "frozen_stamp", None) != stamp:
        data.frozen = compute_states(model, data, FrozenRun(n, default_device(), cfg.resources.precision,
                                                            cfg.source.eval_batch_size))
        data.frozen_stamp = stamp
    model.frozen_layers = n


def evaluate_per_language(cfg: "Config", models: dict, split: str) -> dict:
    """per_language mode: each language scored by its own model; the source
    column is the mean over those models."""

    accs, source = {}, []
    for lang, path in models.items():
        res = evaluate(with_values(cfg, {"data.target_langs": [lang]}), path, split)
        if lang in res:
            accs[lang] = res[lang]
        if cfg.data.source_lang in res:
            source.append(res[cfg.data.source_lang])
    if source:
        accs[cfg.data.source_lang] = sum(source) / len(source)
    return accs


def split_label(cfg: "Config", split: str) -> str:
    """The split's name in a report, marked transductive where its target
    rows are the unlabelled rows the stages trained on."""
    d = cfg.data
    spec = {"dev": d.target_dev, "test": d.target_test}[split]
    if spec and spec == d.target_train:
        return f"{split} (transductive: its target rows are the unlabelled rows CoNL and self-training trained on)"
    return split


def accuracy_tables(cfg: "Config", out: Path, models: dict, prefix: str = "",
                    scores: dict | None = None) -> str:
    """Write ``out/<prefix>accuracy_{dev,test}.{md,csv}``; ``models``: row
    name -> model directory (or lang -> directory). ``scores``, when given,
    receives split -> row name -> language -> accuracy (a fraction)."""
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    text = []
    for split in ("dev", "test"):
        by_class: dict = {}
        results = {name: evaluate_per_language(cfg, path, split) if isinstance(path, dict)
                   else evaluate(cfg, path, split, by_class.setdefault(name, {})) for name, path in models.items()}
        results = {k: v for k, v in results.items() if v}
        if scores is not None:
            scores[split] = results
        if results:
            md = write_language_table(results, langs, cfg.data.source_lang, out / f"{prefix}accuracy_{split}")
            text.append(f"Per-language accuracy (%), {split_label(cfg, split)}:\n\n{md}")
            labels = list(cfg.data.task.labels)
            rows = [[name] + [100 * recall[label] for label in labels] for name, recall in by_class.items() if recall]
            if rows:
                md = write_table(out / f"{prefix}class_accuracy_{split}", ["model"] + labels, rows)
                text.append(f"Accuracy (%) per gold label, target languages, {split}:\n\n{md}")
    return "\n".join(text)


# -- the models a run directory holds --------------------------------------------------------

def finished_models(cfg: "Config", run: RunDir) -> dict:
    """Row name -> model directory (per_language mode: -> {lang: directory})
    for every finished stage of the run."""
    models: dict = {}
    if cfg.model.source_checkpoint or run.is_done(SOURCE):
        models["zero-shot"] = cfg.model.source_checkpoint or str(run.model(SOURCE))
    earlier = False  # a target stage before it is on: CoNLST after CoNL, self-training alone (config/stages.py)
    for record in TARGET:
        if not enabled(cfg, record):
            continue
        name, stage, earlier = record.rows[0] if earlier else record.rows[-1], record.name, True
        if cfg.data.target_mode == "per_language":
            found = {lang: str(run.target_run(lang).model(stage)) for lang in cfg.data.target_langs
                     if run.target_run(lang).is_done(stage)}
            if found:
                models[name] = found
        elif run.is_done(stage):
            models[name] = str(run.model(stage))
    return models


def with_corrected(models: dict, corrected: dict) -> dict:
    """The candidates in chain order: each prior-corrected model right after its base."""
    out = {}
    for name, model in models.items():
        out[name] = model
        if corrected_name(name) in corrected:
            out[corrected_name(name)] = corrected[corrected_name(name)]
    return out


# -- calibration (Table 4, Fig. 3-4) ---------------------------------------------------------

def calibration_report(cfg: "Config", run: RunDir, conl, out: Path,
                       predictions: TargetPredictions | None = None) -> str | None:
    """Write calibration.{md,csv} and calibration_hist.png under ``out``,
    comparing ``run``'s initial pseudo-labels with those of the ``conl``
    model (a directory, or lang -> directory); None (and a log line) when
    there is no CoNL model or the target corpus has no gold labels."""
    from conlst_ray.ray_jobs.sharded import read_outputs
    from conlst_ray.reporting.figures import class_histograms, confidence_histograms

    before_dir = run.pseudo_labels(SOURCE)
    if not conl or not run.is_done(PSEUDO_LABELS):
        log.info("[report] calibration skipped: the run has no CoNL model or no initial pseudo-labels")
        return None
    predictions = predictions or TargetPredictions(cfg, run)
    corpus = predictions.corpus
    if not any(label >= 0 for label in corpus.column("label").to_pylist()):
        log.info("[report] calibration skipped: the target corpus carries no gold labels")
        return None
    after_table = predictions.of(CONL, conl)
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
    title = f"{run.root.name}: pseudo-labels of the target rows by confidence, before and after {name}"
    confidence_histograms(panels, langs, out / "calibration_hist.png", len(labels), title=title)
    by_class = write_table(out / "calibration_by_class", *class_rows(before, after, langs, labels),
                           markdown=lambda h, r: class_markdown(h, r, name))
    class_histograms(panels, labels, out / "calibration_hist_by_class.png",
                     title=f"{run.root.name}: by pseudo-label class, all target languages, before and after {name}")
    return md + "\n" + by_class


# -- cost per stage ------------------------------------------------------------------------


def stage_costs(cfg: "Config", run: RunDir, out: Path) -> str | None:
    """Seconds and throughput of every finished stage (training stages count
    examples as optimiser steps x batch size; their seconds include Ray
    Train's start-up)."""
    roots = [("", run.root)] + [(f"{lang}/", run.target_run(lang).root) for lang in cfg.data.target_langs]
    rows = []
    for prefix, root in roots:
        for stage, batch_of in ((s.name, s.batch_section) for s in STAGES):
            info = RunDir(root).done_record(stage)
            if info is None:
                continue
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


def full_report(cfg: "Config", run: RunDir, models: dict | None = None, calibration: bool = True) -> str:
    """Every table and figure of one run under RUN/results; returns the text."""
    models = models if models is not None else finished_models(cfg, run)
    out = run.results
    out.mkdir(parents=True, exist_ok=True)
    scores: dict = {}
    predictions = TargetPredictions(cfg, run)
    corrected, prior_md = prior_candidates(cfg, run, models, predictions, out)
    models = with_corrected(models, corrected)
    parts = [accuracy_tables(cfg, out, models, scores=scores)]
    if prior_md:
        parts.append(prior_md)
    if calibration:
        md = calibration_report(cfg, run, models.get("CoNL"), out, predictions)
        if md:
            parts.append(md + f"\nHistograms: {out / 'calibration_hist.png'}\n")
    if models:
        parts.append(hand_back(cfg, run, models, scores.get("dev", {}), predictions, out))
    costs = stage_costs(cfg, run, out)
    if costs:
        parts.append(f"Cost per stage:\n\n{costs}")
    for folder in (run.results, run.analysis):  # object storage: where the user fetches them
        storage.publish(folder)
    return "\n".join(parts)
