"""The free baseline in every report: each target language's class prior,
estimated from its unlabelled rows without labels, and the stage models
corrected to it (algorithm/prior.py). A corrected model is a candidate of
the hand-back like any stage, and a model folder of its own
(``RUN/prior/<stage>/model``) that predict and the Auto classes can use.

Which estimate the correction follows is ``selection.prior``:

- ``source``: the corpus has the source data's class shares; the model's
  excess of a class in a language is its own bias there (XNLI: the
  zero-shot model over-predicts ``neutral`` in every target language);
- ``bbse``: one prior for every language, estimated on the corpus's
  source-language rows by black-box shift estimation (Lipton et al. 2018)
  with the confusion matrix of the labelled source dev set: for a corpus
  whose classes are not balanced (measured in docs/PRIOR.md);
- ``em``: the EM estimate (Saerens et al. 2002): the model is taken as
  calibrated in the target language and the excess as the corpus's own
  (on multilingual-e5-small it is not: docs/PRIOR.md);
- ``off``: no corrected candidates.

Both estimates are reported whatever the choice, beside the model's own
predicted shares, so a user who knows the corpus can tell which holds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import numpy as np

from conlst_ray.algorithm.prior import class_shares, em_bias, em_prior, matching_bias
from conlst_ray.models.language_bias import correct_by_language
from conlst_ray.reporting.selection import STAGE_OF, SUFFIX, TRAINED
from conlst_ray.reporting.tables import write_table

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


# the stage models whose corrections are candidates (name in the report -> stage folder)
CORRECTED = {name: stage for name, stage in TRAINED.items() if name != "CoNL"}


def corrected_name(name: str) -> str:
    return name + SUFFIX


def saved_candidates(run, models: dict) -> dict:
    """The corrected candidates a report saved for ``models`` (name -> folder)."""
    out = {}
    for name in models:
        folder = run.prior_model(CORRECTED[name]) if name in CORRECTED else None
        if folder is not None and (folder / "config.json").is_file():
            out[corrected_name(name)] = str(folder)
    return out


def source_prior(cfg: "Config", run) -> np.ndarray:
    """The class shares of the labelled source training rows (the prior the
    source model's posteriors carry)."""
    from conlst_ray.data.corpora import CORPUS_FOLDERS
    from conlst_ray.ray_jobs.sharded import read_outputs
    from conlst_ray.storage import mirror as storage

    n = len(cfg.data.task.labels)
    folder = run.corpus(CORPUS_FOLDERS["data.source_train"])
    if not storage.exists(folder):
        return np.full(n, 1.0 / n)
    return class_shares(read_outputs(folder).column("label").to_numpy(), n)


def q_by_language(table, langs) -> dict[str, np.ndarray]:
    """Language -> [N, C] posteriors of its rows in a predictions table."""
    col = table.column("q").combine_chunks()
    q = col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
    row_langs = np.asarray(table.column("lang").to_pylist())
    return {lang: q[row_langs == lang] for lang in langs if (row_langs == lang).any()}


def estimates(q: dict, prior_s: np.ndarray, shared: Optional[np.ndarray] = None) -> dict[str, dict]:
    """Per language: the model's predicted shares, its mean posterior, the
    EM prior, and the logit bias of each correction (``shared``: the BBSE
    prior of the corpus's source-language rows, when estimated)."""
    out = {}
    for lang, ql in q.items():
        em = em_prior(ql, prior_s)
        bias = {"em": em_bias(em, prior_s), "source": matching_bias(ql, prior_s)}
        if shared is not None:
            bias["bbse"] = matching_bias(ql, shared)
        out[lang] = {"predicted": np.bincount(ql.argmax(1), minlength=len(prior_s)) / len(ql),
                     "mean_q": ql.mean(0), "em": em, "bbse": shared, "bias": bias}
    return out


def source_language_prior(cfg: "Config", model_dir: str) -> np.ndarray:
    """selection.prior=bbse: the corpus's class prior, estimated on its
    source-language rows (data.target_train read for data.source_lang,
    labels never read) by black-box shift estimation with the confusion
    matrix of ``model_dir`` on data.source_dev. The source language is where
    the model's confusions were measured, so the estimate carries no
    language bias; it is then taken as every target language's prior."""
    from conlst_ray.algorithm.prior import bbse_prior, confusion
    from conlst_ray.data.corpora import read_options, source_corpus
    from conlst_ray.data.readers import read_corpus
    from conlst_ray.training.classifier import Classifier

    d = cfg.data
    rows, _ = read_corpus(d.target_train, d.source_lang, **read_options(d))
    dev = source_corpus(d, "dev")
    clf = Classifier(model_dir, max_length=d.max_length)
    gold = np.asarray(dev.column("label").to_numpy())
    conf = confusion(clf.proba_of(dev).argmax(1)[gold >= 0], gold[gold >= 0], len(d.task.labels))
    prior = bbse_prior(clf.proba_of(rows).argmax(1), conf)
    log.info(f"[report] class prior of {d.target_train.replace('{lang}', d.source_lang)} ({rows.num_rows} rows, "
        f"black-box shift estimation): " + ", ".join(f"{label} {100 * p:.1f} %" for label, p in
                                                    zip(d.task.labels, prior)))
    return prior


def derived_predictions(table, bias: dict):
    """A predictions table of the corrected model, from its base model's
    (no second pass over the rows: the correction is a bias per language)."""
    import pyarrow as pa

    col = table.column("q").combine_chunks()
    q = correct_by_language(col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1),
                    table.column("lang").to_pylist(), bias).astype(np.float32)
    return pa.table({"id": table.column("id"), "lang": table.column("lang"),
                     "pseudo_label": q.argmax(-1).astype("int64"), "confidence": q.max(-1),
                     "q": pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), q.shape[1])})


def prior_candidates(cfg: "Config", run, models: dict, predictions, out) -> tuple[dict, Optional[str]]:
    """The corrected candidates (name -> model folder), saved under RUN/prior,
    and the report's class-prior table (None when there is nothing to
    estimate from)."""
    from conlst_ray.models.corrected import save_corrected
    from conlst_ray.storage import mirror as storage

    how = cfg.selection.prior
    langs = list(cfg.data.target_langs)
    prior_s = source_prior(cfg, run)
    found, text, shared = {}, None, None
    for name, stage in CORRECTED.items():
        model = models.get(name)
        if model is None or isinstance(model, dict):  # per_language mode: a model per language, not corrected
            continue
        table = predictions.of(STAGE_OF[name], model)
        if table is None or "q" not in table.column_names:
            continue
        if how == "bbse" and name == "zero-shot":
            shared = source_language_prior(cfg, model)
        est = estimates(q_by_language(table, langs), prior_s, shared)
        if name == "zero-shot":
            text = write_prior_table(cfg, est, prior_s, out)
        if how == "off":
            continue
        bias = {lang: e["bias"][how].tolist() for lang, e in est.items()}
        folder = save_corrected(storage.fetch(model) if storage.is_remote(model) else model, bias,
                                storage.here(run.prior_model(stage)), _HOW[how])
        storage.publish(run.prior_model(stage))  # object storage: where every node and the user find it
        predictions.add(STAGE_OF[name] + SUFFIX, derived_predictions(table, bias))
        found[corrected_name(name)] = str(folder)
        log.info(f"[report] {corrected_name(name)}: {name} with a class-prior correction per language ({how}) "
                 f"-> {folder}")
    return found, text


_HOW = {"bbse": "one prior for every language, estimated by black-box shift estimation (Lipton et al. 2018) on "
                "the corpus's source-language rows, where the model's confusions were measured on labelled dev rows",
        "em": "the EM of Saerens, Latinne and Decaestecker (2002): the corpus's own class shares, taking the model "
              "as calibrated in that language",
        "source": "the source data's class shares, taking the model's excess of a class in that language as its "
                  "own bias there"}


def write_prior_table(cfg: "Config", est: dict, prior_s: np.ndarray, out) -> str:
    """results/class_prior.{md,csv}: per target language and class, the
    zero-shot model's predicted share, the EM estimate and the source prior."""
    labels = list(cfg.data.task.labels)
    rows = []
    for lang, e in est.items():
        for j, label in enumerate(labels):
            shared = "" if e["bbse"] is None else round(100 * float(e["bbse"][j]), 1)
            rows.append([lang, label] + [round(100 * float(v[j]), 1) for v in (e["predicted"], e["mean_q"], e["em"],
                                                                                prior_s)] + [shared])
    md = write_table(out / "class_prior", ["language", "class", "zero-shot predicted share (%)",
                                           "zero-shot mean posterior (%)", "EM estimate (%)", "source prior (%)",
                                           "BBSE estimate, source-language rows (%)"], rows)
    return (f"Class prior per target language, estimated from the unlabelled rows without labels "
            f"(the correction follows selection.prior={cfg.selection.prior}):\n\n{md}")
