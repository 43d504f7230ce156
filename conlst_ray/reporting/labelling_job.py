"""Each stage model's predictions on the unlabelled target rows, made once
per report and shared by its readers (calibration, the label-free stage
selection): the zero-shot model's are the run's own pseudo-labels; a
later stage's are made in the driver for a small corpus, by the
pseudo-labelling Ray Data job (cached under RUN/analysis) for a large one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from conlst_ray.config.stages import PSEUDO_LABELS, SOURCE
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.storage import mirror as storage

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


# Up to this many target rows a model labels them in the driver: a Ray Data
# job's start-up costs more (measured on 8,000 rows: about 10 s for the job,
# under 1 s in the driver).
DRIVER_INFERENCE_ROWS = 20_000


class TargetPredictions:
    """id, lang, pseudo_label, confidence of every target row, per stage
    model (a directory, or language -> directory in per_language mode)."""

    def __init__(self, cfg: "Config", run: RunDir, analysis_dir: Optional[Path] = None):
        self.cfg, self.run = cfg, run
        self.analysis_dir = analysis_dir or run.analysis
        self._made: dict = {}
        self._corpus = None

    @property
    def corpus(self):
        from conlst_ray.ray_jobs.sharded import read_outputs

        if self._corpus is None:
            self._corpus = read_outputs(self.run.target_corpus)
        return self._corpus

    def add(self, stage: str, table) -> None:
        """Predictions made without the model (a corrected model's, derived
        from its base model's)."""
        self._made[stage] = table

    def of(self, stage: str, model) -> Optional[object]:
        """The predictions of ``stage``'s model (stage: source, conl, ssl);
        None when there is no target corpus to label."""
        from conlst_ray.ray_jobs.sharded import read_outputs

        if stage in self._made:
            return self._made[stage]
        if stage == SOURCE and self.run.is_done(PSEUDO_LABELS):
            table = read_outputs(self.run.pseudo_labels(SOURCE))
        elif not storage.exists(self.run.target_corpus) or not model:
            return None
        elif self.corpus.num_rows <= DRIVER_INFERENCE_ROWS:
            table = _labels_in_driver(self.cfg, self.corpus, model)
        else:
            table = read_outputs(_labels_by_job(self.cfg, self.run, model,
                                                self.analysis_dir / f"pseudo_labels_{stage}"))
        self._made[stage] = table
        return table


def _labels_by_job(cfg: "Config", run: RunDir, model, out: Path) -> Path:
    """A model's labels of the target corpus by the same Ray Data job that
    made the source model's. Cached in ``out``, per language tied to the
    weights that made it: new weights relabel (an analysis cache is
    recomputed, never refused)."""
    from conlst_ray.ray_jobs.corpus_cache import read_manifest
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    corpus = run.target_corpus
    for lang, model_dir in models_by_language(model):
        langs = [lang] if lang else list(cfg.data.target_langs)
        manifests = {code: read_manifest(corpus, code) for code in langs}
        pseudo_label(model_dir, CachedCorpus(Path(corpus), manifests), out, cfg, recompute=True)
    return out


def _labels_in_driver(cfg: "Config", corpus, model):
    """A model's labels of every corpus row (per_language mode: each
    language under its own model), in this process."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.models.language_bias import correct_by_language
    from conlst_ray.models.tokenizers import open_tokenizer
    from conlst_ray.training.batches import encode_table
    from conlst_ray.training.inference import default_device, predict_proba

    parts = []
    for lang, model_dir in models_by_language(model):
        rows = corpus if lang is None else corpus.filter(pc.equal(corpus.column("lang"), lang))
        tokenizer = open_tokenizer(model_dir)
        encoder = ConlstEncoder.load(model_dir)
        q = predict_proba(encoder, encode_table(tokenizer, rows, cfg.data.max_length), tokenizer.pad_token_id,
                          cfg.source.eval_batch_size, default_device(), cfg.resources.precision)
        q = correct_by_language(q, rows.column("lang").to_pylist(), encoder.language_bias)
        parts.append(pa.table({"id": rows.column("id"), "lang": rows.column("lang"),
                               "pseudo_label": q.argmax(-1).astype("int64"), "confidence": q.max(-1),
                               "q": pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), q.shape[1])}))
    return pa.concat_tables(parts)


def models_by_language(model) -> list[tuple]:
    """(language, model directory) pairs; language None = one model for all."""
    return list(model.items()) if isinstance(model, dict) else [(None, model)]
