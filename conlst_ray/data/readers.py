"""Corpus readers: every format -> a ``pyarrow.Table`` in ROW_SCHEMA.

A corpus is named by a spec string ``format:location``:

=====================================  ==========================================
``xnli_tsv:PATH``                      XTREME-layout XNLI: no header, premise, hypothesis, label
``xnli_mt_tsv:PATH``                   XNLI-MT / MultiNLI TSV: header ``premise hypo label``
``tsv:PATH[?text=C&label=C...]``       delimited, columns mapped (data/delimited.py; ``header=none``: by position)
``csv:PATH[?...]``                     the same, comma-separated
``jsonl:PATH[?...]``                   one JSON object a line
``parquet:PATH[?...]``                 a Parquet file
``hf:DATASET[:CONFIG]:SPLIT[?...]``    Hugging Face hub, e.g. ``hf:facebook/xnli:fr:validation``,
                                       ``hf:google-research-datasets/paws-x:{lang}:test?text=sentence1&text_pair=sentence2``
``synthetic:SPLIT``                    the embedded benchmark (train, dev, test, unlabelled)
=====================================  ==========================================

What a row is comes from the task (``data.task``, data/task.py): single texts
or pairs, and the label names. The options after ``?`` map the source's
columns to the schema: ``text``, ``text_pair`` (pair tasks), ``label``,
``id``, ``lang`` (``premise`` and ``hypothesis`` are accepted for ``text`` and
``text_pair``). Unmapped fields use ``data.task.columns``, then the defaults:
``text`` or ``premise``; ``text_pair`` or ``hypothesis``; ``label``. Labels
are the task's names (any case) or ids; unknown labels are errors naming the
file and line.

``{lang}`` in a spec is replaced by the language code, so one spec serves all
target languages (``xnli_tsv:../shared/data/xnli/dev-{lang}.tsv``).

Malformed rows (wrong column count, unknown label, empty text) raise a
``CorpusError`` naming the file and line, unless ``on_malformed="skip"``, in
which case they are counted in the returned ``ReadReport``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from conlst_ray.data.columns import resolve_columns, split_options
from conlst_ray.data.delimited import read_delimited
from conlst_ray.data.hub import read_hf
from conlst_ray.data.rows import (
    MAX_LINE_BYTES,
    ReadReport,
    RowSink,
    id_prefix,
    lang_from_name,
    open_lines,
    records_into,
)
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.synthetic import SyntheticBenchmark
from conlst_ray.data.task import NLI, Task

FORMATS = ("xnli_tsv", "xnli_mt_tsv", "tsv", "csv", "jsonl", "parquet", "hf", "synthetic")


def _pair_layout(path: Path, task: Task, fmt: str) -> None:
    if not task.is_pair:
        raise CorpusError(f"{path}: {fmt} holds text pairs but the task reads single texts (data.task.kind: single); "
                          f"use tsv:PATH?header=none&text=0&label=2 to read one column")


def read_xnli_tsv(path: str | os.PathLike, lang: Optional[str] = None,
                  on_malformed: str = "raise", max_rows: Optional[int] = None,
                  max_line_bytes: Optional[int] = MAX_LINE_BYTES, task: Task = NLI):
    """XTREME-layout XNLI (``dev-fr.tsv``): no header; premise, hypothesis, label."""
    path = Path(path)
    _pair_layout(path, task, "xnli_tsv")
    sink = RowSink(str(path), lang_from_name(path, lang), id_prefix(path), on_malformed, task)
    for lineno, line in open_lines(path, sink, max_line_bytes):
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        if not line:
            sink.bad(f"{path}:{lineno}", "empty line")
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            sink.bad(f"{path}:{lineno}", f"expected 3 tab-separated columns, found {len(parts)}")
            continue
        sink.add(f"{path}:{lineno}", parts[0], parts[1], parts[2], row_id=lineno)
    return sink.table(), sink.report


def read_xnli_mt_tsv(path: str | os.PathLike, lang: Optional[str] = None,
                     on_malformed: str = "raise", max_rows: Optional[int] = None,
                     max_line_bytes: Optional[int] = MAX_LINE_BYTES, task: Task = NLI):
    """XNLI-MT / MultiNLI TSV (``multinli.train.fr.tsv``): header ``premise hypo label``."""
    path = Path(path)
    _pair_layout(path, task, "xnli_mt_tsv")
    sink = RowSink(str(path), lang_from_name(path, lang), id_prefix(path), on_malformed, task)
    header: list[str] | None = None
    for lineno, line in open_lines(path, sink, max_line_bytes):
        if header is None:
            header = line.split("\t")
            missing = {"premise", "hypo", "label"} - set(header)
            if missing:
                raise CorpusError(f"{path}:{lineno}: header lacks column(s) {sorted(missing)}; got {header}")
            col = {name: header.index(name) for name in ("premise", "hypo", "label")}
            continue
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        parts = line.split("\t")
        if len(parts) != len(header):
            sink.bad(f"{path}:{lineno}", f"expected {len(header)} tab-separated columns, found {len(parts)}")
            continue
        # Row ids count data rows from 0, matching the order of the source file.
        sink.add(f"{path}:{lineno}", parts[col["premise"]], parts[col["hypo"]], parts[col["label"]],
                 row_id=lineno - 2)
    if header is None:
        raise CorpusError(f"{path}: empty file (no header)")
    return sink.table(), sink.report


def read_jsonl(location: str | os.PathLike, lang: Optional[str] = None,
               on_malformed: str = "raise", max_rows: Optional[int] = None,
               max_line_bytes: Optional[int] = MAX_LINE_BYTES, task: Task = NLI):
    """JSON lines: one object a line; text (and text_pair) columns as the
    spec or the task maps them, optional label, id (default: the line number)
    and lang."""
    path_text, given = split_options(f"jsonl:{location}", str(location))
    path = Path(path_text)
    sink = RowSink(str(path), lang or "und", id_prefix(path), on_malformed, task)

    def records():
        for lineno, line in open_lines(path, sink, max_line_bytes):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{lineno}", lineno, f"invalid JSON ({exc.msg})"

    records_into(sink, records(), max_rows, given)
    return sink.table(), sink.report


def read_parquet(location: str | os.PathLike, lang: Optional[str] = None,
                 on_malformed: str = "raise", max_rows: Optional[int] = None, max_line_bytes=None,
                 task: Task = NLI):
    """Parquet with text (and text_pair) columns as the spec or the task maps
    them, optional label, id, lang. Rows are numbered from 1 in error messages."""
    path_text, given = split_options(f"parquet:{location}", str(location))
    path = Path(path_text)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise CorpusError(f"{path}: cannot read as Parquet: {exc}") from None
    columns = resolve_columns(str(path), table.column_names, task, given)
    if max_rows is not None:
        table = table.slice(0, max_rows)
    sink = RowSink(str(path), lang or "und", id_prefix(path), on_malformed, task)
    records = ((f"{path}:row {i + 1}", i + 1, rec) for i, rec in enumerate(table.to_pylist()))
    records_into(sink, records, max_rows, given, columns)
    return sink.table(), sink.report


# --- dispatch -------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, str]:
    fmt, sep, location = spec.partition(":")
    if not sep or fmt not in FORMATS:
        raise CorpusError(f"corpus spec {spec!r}: expected 'format:location' with format in {list(FORMATS)}")
    return fmt, location


def read_rows(spec: str, lang: str, skip_rows: int = 0, **options):
    """``read_corpus`` without its first ``skip_rows`` rows (``max_rows``
    counts after them)."""
    if not skip_rows:
        return read_corpus(spec, lang, **options)
    if options.get("max_rows") is not None:
        options = {**options, "max_rows": skip_rows + options["max_rows"]}
    table, report = read_corpus(spec, lang, **options)
    return table.slice(skip_rows), report


def read_corpus(spec: str, lang: str, *, on_malformed: str = "raise", max_rows: Optional[int] = None,
                synthetic_cfg=None, max_line_bytes: Optional[int] = MAX_LINE_BYTES, task: Optional[Task] = None):
    """Read one corpus spec for one language -> (table, report); ``task``
    (default NLI) says what the rows are: single texts or pairs, which labels."""
    task = task or NLI
    spec = spec.replace("{lang}", lang)
    fmt, location = parse_spec(spec)
    if fmt == "synthetic":

        table = SyntheticBenchmark.from_config(synthetic_cfg, task).table(lang, location)
        if max_rows is not None:
            table = table.slice(0, max_rows)
        return table, ReadReport(spec, rows=table.num_rows)
    if fmt == "hf":
        location, given = split_options(spec, location)
        parts = location.split(":")
        if len(parts) == 2:
            parts = [parts[0], "", parts[1]]
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise CorpusError(f"corpus spec {spec!r}: expected hf:DATASET[:CONFIG]:SPLIT[?text=COLUMN&...]")

        return read_hf(tuple(parts), lang, on_malformed, max_rows, task, given)
    if fmt in ("tsv", "csv"):

        return read_delimited(fmt, location, lang, on_malformed=on_malformed, max_rows=max_rows,
                              max_line_bytes=max_line_bytes, task=task)
    reader: Callable = {"xnli_tsv": read_xnli_tsv, "xnli_mt_tsv": read_xnli_mt_tsv,
                        "jsonl": read_jsonl, "parquet": read_parquet}[fmt]
    return reader(location, lang, on_malformed=on_malformed, max_rows=max_rows, max_line_bytes=max_line_bytes,
                  task=task)


def no_rows(spec: str, lang: str, report: ReadReport) -> CorpusError:
    """A language that read no rows, saying why when every row was skipped."""
    why = f" ({report.summary()})" if report.skipped else ""
    return CorpusError(f"{spec.replace('{lang}', lang)}: language {lang!r} has no rows{why}")


def check_language_template(spec: str, langs: Iterable[str], where: str, task: Optional[Task] = None) -> None:
    """A file read for several languages must name them: ``{lang}`` in the
    spec, or a ``lang=`` column. Otherwise every language would silently read
    the same rows."""
    langs = list(dict.fromkeys(langs))
    fmt, location = parse_spec(spec)
    if len(langs) < 2 or fmt in ("hf", "synthetic") or "{lang}" in spec:
        return
    if "lang" in split_options(spec, location, ("sep", "header", "quote"))[1] or (task and task.mapped("lang")):
        return
    raise CorpusError(f"{where}: {spec} is read for {len(langs)} languages ({', '.join(langs)}) but has no "
                      f"{{lang}} to tell their files apart (e.g. dev-{{lang}}.tsv), nor a lang= column")


def read_languages(spec: str, langs: Iterable[str], **kwargs) -> tuple[pa.Table, list[ReadReport]]:
    """Read one spec for several languages into one table (ids stay unique:
    every id carries its language)."""
    tables, reports = [], []
    for lang in langs:
        table, report = read_corpus(spec, lang, **kwargs)
        if table.num_rows == 0:
            raise no_rows(spec, lang, report)
        tables.append(table)
        reports.append(report)
    return pa.concat_tables(tables), reports
