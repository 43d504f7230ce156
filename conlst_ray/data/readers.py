"""Corpus readers: every format -> a ``pyarrow.Table`` in ROW_SCHEMA.

A corpus is named by a spec string ``format:location``:

=====================================  ==========================================
``xnli_tsv:PATH``                      XTREME-layout XNLI: no header, premise, hypothesis, label
``xnli_mt_tsv:PATH``                   XNLI-MT / MultiNLI TSV: header ``premise hypo label``
``tsv:PATH[?premise=C&hypothesis=C&label=C]``  delimited with a header, columns mapped (data/delimited.py);
``csv:PATH[?...]``                     the same, comma-separated
``jsonl:PATH``                         one JSON object a line: premise, hypothesis, [label], [id], [lang]
``parquet:PATH``                       columns premise, hypothesis, [label], [id], [lang]
``hf:DATASET[:CONFIG]:SPLIT``          Hugging Face hub, e.g. ``hf:facebook/xnli:fr:validation``,
                                       ``hf:nyu-mll/multi_nli::train``
``synthetic:SPLIT``                    the embedded benchmark (train, dev, test, unlabelled)
=====================================  ==========================================

``{lang}`` in a spec is replaced by the language code, so one spec serves all
target languages (``xnli_tsv:../shared/data/xnli/dev-{lang}.tsv``).

Malformed rows (wrong column count, unknown label, empty text) raise a
``CorpusError`` naming the file and line, unless ``on_malformed="skip"``, in
which case they are counted in the returned ``ReadReport``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from conlst_ray.data.schema import (LABEL_IDS, LABEL_NAMES, UNKNOWN_LABEL, CorpusError,
                                    empty_columns, rows_to_table)

FORMATS = ("xnli_tsv", "xnli_mt_tsv", "tsv", "csv", "jsonl", "parquet", "hf", "synthetic")


@dataclass
class ReadReport:
    """What a reader did: rows kept, rows skipped and why (first few examples)."""
    source: str
    rows: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    def summary(self) -> str:
        """'FILE: N rows, K malformed rows skipped: reason x count, ...; first: FILE:LINE: reason, ...'"""
        text = f"{self.source}: {self.rows} rows"
        if self.skipped:
            reasons = ", ".join(f"{reason} x {n}" for reason, n in self.reasons.most_common())
            text += f", {self.skipped} malformed rows skipped: {reasons}; first: {'; '.join(self.examples[:3])}"
        return text


class _RowSink:
    """Collects validated rows; raises or counts on a malformed one."""

    def __init__(self, source: str, lang: str, id_prefix: str, on_malformed: str):
        if on_malformed not in ("raise", "skip"):
            raise ValueError(f"on_malformed must be 'raise' or 'skip', got {on_malformed!r}")
        self.cols = empty_columns()
        self.report = ReadReport(source)
        self.lang, self.id_prefix, self.on_malformed = lang, id_prefix, on_malformed
        self.seen_ids: set[str] = set()

    def bad(self, where: str, reason: str) -> None:
        if self.on_malformed == "raise":
            raise CorpusError(f"{where}: {reason}")
        self.report.skip(where, reason)

    def add(self, where: str, premise: Any, hypothesis: Any, label: Any, row_id: Any = None,
            lang: Any = None) -> None:
        for name, text in (("premise", premise), ("hypothesis", hypothesis)):
            if text is None:
                return self.bad(where, f"missing {name}")
            if not isinstance(text, str):
                return self.bad(where, f"{name} is a {type(text).__name__} ({text!r}), not text")
            if not text.strip():
                return self.bad(where, f"empty {name}")
        try:
            label_id = parse_label(label)
        except ValueError as exc:
            return self.bad(where, str(exc))
        lang = lang or self.lang
        rid = f"{lang}-{self.id_prefix}-{row_id}"
        if rid in self.seen_ids:
            return self.bad(where, f"duplicate id {row_id!r}")
        self.seen_ids.add(rid)
        for key, value in (("id", rid), ("lang", lang), ("premise", premise.strip()),
                           ("hypothesis", hypothesis.strip()), ("label", label_id)):
            self.cols[key].append(value)
        self.report.rows += 1

    def table(self) -> pa.Table:
        return rows_to_table(self.cols)


def parse_label(label: Any) -> int:
    """Label names (any case, incl. XNLI-MT's 'contradictory'), ids 0-2, or -1/None/'' for unknown."""
    if label is None or label == "" or label == UNKNOWN_LABEL:
        return UNKNOWN_LABEL
    if isinstance(label, bool):
        raise ValueError(f"unknown label {label!r}")
    if isinstance(label, int):
        if 0 <= label < len(LABEL_NAMES):
            return label
        raise ValueError(f"unknown label id {label!r} (expected 0-{len(LABEL_NAMES) - 1} or -1)")
    if isinstance(label, str):
        key = label.strip().lower()
        if key in LABEL_IDS:
            return LABEL_IDS[key]
        if key.lstrip("-").isdigit():
            return parse_label(int(key))
    raise ValueError(f"unknown label {label!r} (expected one of {sorted(LABEL_IDS)})")


def _lang_from_name(path: Path, lang: Optional[str]) -> str:
    """dev-fr.tsv / multinli.train.fr.tsv -> 'fr' unless given."""
    if lang:
        return lang
    stem = path.name.rsplit(".", 1)[0]
    for sep in ("-", ".", "_"):
        if sep in stem:
            return stem.rsplit(sep, 1)[1]
    raise CorpusError(f"{path}: cannot infer the language from the file name; give lang=")


def _id_prefix(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


MAX_LINE_BYTES = 1 << 20  # data.max_line_bytes: longer lines are malformed rows, never read whole


def check_file(path: Path) -> None:
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")


def _open_lines(path: Path, sink: Optional["_RowSink"] = None, max_line_bytes: Optional[int] = MAX_LINE_BYTES,
                keep_ends: bool = False) -> Iterable[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, read as bytes so that a bad byte
    is an error naming file, line and byte; a UTF-8 byte order mark is
    dropped; a line over ``max_line_bytes`` is a malformed row (reported to
    ``sink``) and is skipped without being held in memory."""
    check_file(path)
    limit = max_line_bytes or -1
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(limit + 1 if limit > 0 else -1)
            if not raw:
                return
            lineno += 1
            if 0 < limit < len(raw) and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):  # drain the rest of the line in chunks
                    raw = fh.readline(1 << 20)
                    size += len(raw)
                if sink is None:
                    raise CorpusError(f"{path}:{lineno}: line of {size} bytes is longer than "
                                      f"data.max_line_bytes ({max_line_bytes})")
                sink.bad(f"{path}:{lineno}", f"line longer than data.max_line_bytes ({max_line_bytes})")
                if keep_ends:  # an empty line keeps a csv reader's line count in step
                    yield lineno, "\n"
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line is "
                                  f"0x{raw[exc.start]:02x}); re-encode the file as UTF-8") from None
            yield lineno, line if keep_ends else line.rstrip("\n").rstrip("\r")


def read_xnli_tsv(path: str | os.PathLike, lang: Optional[str] = None,
                  on_malformed: str = "raise", max_rows: Optional[int] = None,
                  max_line_bytes: Optional[int] = MAX_LINE_BYTES):
    """XTREME-layout XNLI (``dev-fr.tsv``): no header; premise, hypothesis, label."""
    path = Path(path)
    sink = _RowSink(str(path), _lang_from_name(path, lang), _id_prefix(path), on_malformed)
    for lineno, line in _open_lines(path, sink, max_line_bytes):
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
                     max_line_bytes: Optional[int] = MAX_LINE_BYTES):
    """XNLI-MT / MultiNLI TSV (``multinli.train.fr.tsv``): header ``premise hypo label``."""
    path = Path(path)
    sink = _RowSink(str(path), _lang_from_name(path, lang), _id_prefix(path), on_malformed)
    header: list[str] | None = None
    for lineno, line in _open_lines(path, sink, max_line_bytes):
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


def _records_into(sink: _RowSink, records: Iterable[tuple[str, Any, Any]], max_rows: Optional[int]):
    """Feed (where, default id, record) triples; a record that is a string is
    the reason it could not be parsed."""
    for where, default_id, rec in records:
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        if isinstance(rec, str):
            sink.bad(where, rec)
            continue
        if not isinstance(rec, dict):
            sink.bad(where, "not a JSON object")
            continue
        missing = [k for k in ("premise", "hypothesis") if k not in rec]
        if missing:
            sink.bad(where, f"missing column(s) {missing}")
            continue
        sink.add(where, rec["premise"], rec["hypothesis"], rec.get("label"),
                 row_id=rec.get("id", default_id), lang=rec.get("lang"))


def read_jsonl(path: str | os.PathLike, lang: Optional[str] = None,
               on_malformed: str = "raise", max_rows: Optional[int] = None,
               max_line_bytes: Optional[int] = MAX_LINE_BYTES):
    """JSON lines with premise, hypothesis and optional label, id (default:
    the line number) and lang."""
    path = Path(path)
    sink = _RowSink(str(path), lang or "und", _id_prefix(path), on_malformed)

    def records():
        for lineno, line in _open_lines(path, sink, max_line_bytes):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{lineno}", lineno, f"invalid JSON ({exc.msg})"

    _records_into(sink, records(), max_rows)
    return sink.table(), sink.report


def read_parquet(path: str | os.PathLike, lang: Optional[str] = None,
                 on_malformed: str = "raise", max_rows: Optional[int] = None, max_line_bytes=None):
    """Parquet with premise, hypothesis and optional label, id, lang columns.
    Rows are numbered from 1 in error messages."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise CorpusError(f"{path}: cannot read as Parquet: {exc}") from None
    missing = [c for c in ("premise", "hypothesis") if c not in table.column_names]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; has {table.column_names}")
    if max_rows is not None:
        table = table.slice(0, max_rows)
    sink = _RowSink(str(path), lang or "und", _id_prefix(path), on_malformed)
    records = ((f"{path}:row {i + 1}", i + 1, rec) for i, rec in enumerate(table.to_pylist()))
    _records_into(sink, records, max_rows)
    return sink.table(), sink.report


# --- Hugging Face hub ---------------------------------------------------------

def rows_from_hf_dataset(ds, lang: str, id_prefix: str, on_malformed: str = "raise",
                         max_rows: Optional[int] = None):
    """Map a ``datasets.Dataset`` with premise/hypothesis/label columns (the
    layout of ``facebook/xnli`` and ``nyu-mll/multi_nli``) to ROW_SCHEMA.
    Both use label ids 0 entailment, 1 neutral, 2 contradiction; -1 stays unknown."""
    missing = [c for c in ("premise", "hypothesis") if c not in ds.column_names]
    if missing:
        raise CorpusError(f"{id_prefix}: dataset lacks column(s) {missing}; has {ds.column_names}")
    sink = _RowSink(id_prefix, lang, id_prefix.replace("/", "_"), on_malformed)
    id_col = "pairID" if "pairID" in ds.column_names else None
    records = ((f"{id_prefix}:row {i}", rec[id_col] if id_col else i, rec) for i, rec in enumerate(ds))
    _records_into(sink, records, max_rows)
    return sink.table(), sink.report


def read_hf(dataset: str, config: Optional[str], split: str, lang: Optional[str] = None,
            on_malformed: str = "raise", max_rows: Optional[int] = None):
    """A hub data set (downloads unless cached; fails fast with HF_HUB_OFFLINE=1)."""
    import datasets  # imported lazily: slow to import, and only this reader needs it

    try:
        ds = datasets.load_dataset(dataset, config or None, split=split)
    except Exception as exc:
        raise CorpusError(f"hf:{dataset}:{config or ''}:{split}: cannot load ({type(exc).__name__}: {exc})") from None
    lang = lang or config or "en"
    return rows_from_hf_dataset(ds, lang, f"{dataset}:{config or ''}:{split}", on_malformed, max_rows)


# --- dispatch -------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, str]:
    fmt, sep, location = spec.partition(":")
    if not sep or fmt not in FORMATS:
        raise CorpusError(f"corpus spec {spec!r}: expected 'format:location' with format in {list(FORMATS)}")
    return fmt, location


def read_corpus(spec: str, lang: str, *, on_malformed: str = "raise", max_rows: Optional[int] = None,
                synthetic_cfg=None, max_line_bytes: Optional[int] = MAX_LINE_BYTES):
    """Read one corpus spec for one language -> (table, report)."""
    spec = spec.replace("{lang}", lang)
    fmt, location = parse_spec(spec)
    if fmt == "synthetic":
        from conlst_ray.data.synthetic import SyntheticBenchmark

        bench = SyntheticBenchmark.from_config(synthetic_cfg)
        table = bench.table(lang, location)
        if max_rows is not None:
            table = table.slice(0, max_rows)
        return table, ReadReport(spec, rows=table.num_rows)
    if fmt == "hf":
        parts = location.split(":")
        if len(parts) == 2:
            parts = [parts[0], "", parts[1]]
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise CorpusError(f"corpus spec {spec!r}: expected hf:DATASET[:CONFIG]:SPLIT")
        return read_hf(parts[0], parts[1], parts[2], lang, on_malformed, max_rows)
    if fmt in ("tsv", "csv"):
        from conlst_ray.data.delimited import read_delimited

        return read_delimited(fmt, location, lang, on_malformed=on_malformed, max_rows=max_rows,
                              max_line_bytes=max_line_bytes)
    reader: Callable = {"xnli_tsv": read_xnli_tsv, "xnli_mt_tsv": read_xnli_mt_tsv,
                        "jsonl": read_jsonl, "parquet": read_parquet}[fmt]
    return reader(location, lang, on_malformed=on_malformed, max_rows=max_rows, max_line_bytes=max_line_bytes)


def read_languages(spec: str, langs: Iterable[str], **kwargs) -> tuple[pa.Table, list[ReadReport]]:
    """Read one spec for several languages into one table (ids stay unique:
    every id carries its language)."""
    tables, reports = [], []
    for lang in langs:
        table, report = read_corpus(spec, lang, **kwargs)
        if table.num_rows == 0:
            raise CorpusError(f"{spec.replace('{lang}', lang)}: language {lang!r} has no rows")
        tables.append(table)
        reports.append(report)
    return pa.concat_tables(tables), reports
