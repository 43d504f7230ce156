"""The corpora a run needs, read as the config names them."""

from __future__ import annotations

import logging
from typing import Optional

import pyarrow as pa

from conlst_ray.data.readers import read_corpus, read_languages, read_rows
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import Task

log = logging.getLogger(__name__)

# corpus key -> its folder in a run's corpus cache (RUN/corpus/<folder>, token files below)
CORPUS_FOLDERS = {"data.source_train": "source_train", "data.source_dev": "dev_source",
                  "data.target_train": "target_train", "data.target_dev": "dev_target",
                  "data.target_test": "test_target"}


def read_options(data_cfg, max_rows: Optional[int] = None, skip_rows: int = 0) -> dict:
    """The keyword arguments of ``read_corpus`` that ``data_cfg`` sets (the
    task included); ``max_rows`` overrides ``data.max_rows``. ``skip_rows``
    appears only when set, so the caches made before it existed keep their
    fingerprints."""
    options = {"on_malformed": data_cfg.on_malformed, "max_rows": data_cfg.max_rows if max_rows is None else max_rows,
               "synthetic_cfg": data_cfg.synthetic, "max_line_bytes": data_cfg.max_line_bytes,
               "task": Task.of(data_cfg.task)}
    return {**options, "skip_rows": skip_rows} if skip_rows else options


def _log_reports(reports) -> None:
    for report in reports:
        if report.skipped:
            log.info(f"[data] {report.summary()}")


def source_corpus(data_cfg, split: str = "train") -> Optional[pa.Table]:
    """Labelled source-language rows (split 'train' or 'dev'). The training
    split may span several languages (``data.source_train_langs``:
    translate-train) and has its own cap (``data.max_source_rows``)."""
    spec = data_cfg.source_train if split == "train" else data_cfg.source_dev
    if spec is None:
        return None
    if split != "train":
        table, report = read_rows(spec, data_cfg.source_lang,
                                  **read_options(data_cfg, skip_rows=data_cfg.source_dev_skip_rows))
        _log_reports([report])
        return table
    kwargs = read_options(data_cfg)
    if data_cfg.max_source_rows is not None:
        kwargs["max_rows"] = data_cfg.max_source_rows
    table, reports = read_languages(spec, data_cfg.source_train_langs or [data_cfg.source_lang], **kwargs)
    _log_reports(reports)
    return table


def target_corpus(data_cfg, split: str, langs=None) -> Optional[pa.Table]:
    """Rows of every target language for split 'train' (unlabelled), 'dev' or 'test'."""
    spec = {"train": data_cfg.target_train, "dev": data_cfg.target_dev, "test": data_cfg.target_test}[split]
    if spec is None:
        return None
    table, reports = read_languages(spec, langs or data_cfg.target_langs, **read_options(data_cfg))
    _log_reports(reports)
    return table


def eval_corpus(data_cfg, split: str = "dev") -> Optional[pa.Table]:
    """Source and target rows of one labelled split, for the per-language table."""
    parts = [t for t in (source_corpus(data_cfg, split) if split == "dev" else None,
                         target_corpus(data_cfg, split)) if t is not None]
    if split == "test" and data_cfg.target_test is not None:
        spec = data_cfg.target_test
        try:
            table, _ = read_corpus(spec, data_cfg.source_lang, **read_options(data_cfg))
            parts.insert(0, table)
        except CorpusError:  # many corpora have no source-language test file
            pass
    return pa.concat_tables(parts) if parts else None
