"""Column-mapped delimited files: ``tsv:PATH`` and ``csv:PATH`` with a header.

Real test sets come in many layouts, so which columns hold the premise, the
hypothesis and the label is said in the spec, after ``?``:

    tsv:test.tsv                                   columns premise, hypothesis, label
    csv:test.csv?premise=sentence1&hypothesis=sentence2&label=gold_label
    tsv:dev-{lang}.tsv?label=gold&id=pairID&lang=language

Keys: ``premise``, ``hypothesis``, ``label`` (a column may be absent: unlabelled
rows), ``id`` and ``lang`` (optional columns), ``sep`` (``tab``, ``comma``,
``semicolon``, ``pipe`` or one character; default by format). Other columns
are ignored. Labels are names (``entailment``, ``neutral``, ``contradiction``,
any case) or ids. Fields may be quoted as the csv module reads them. Errors
name the file and line.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl

from conlst_ray.data.schema import CorpusError

SEPARATORS = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
KEYS = ("premise", "hypothesis", "label", "id", "lang", "sep")


def parse_options(fmt: str, location: str) -> tuple[str, dict]:
    """``PATH?key=value&...`` -> (path, options), unknown keys are errors."""
    path, _, query = location.partition("?")
    options = {"premise": "premise", "hypothesis": "hypothesis", "label": "label",
               "sep": "\t" if fmt == "tsv" else ","}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in KEYS:
            raise CorpusError(f"{fmt}:{location}: unknown option {key!r}; options: {', '.join(KEYS)}")
        if key == "sep":
            value = SEPARATORS.get(value, value)
            if len(value) != 1:
                raise CorpusError(f"{fmt}:{location}: sep must be one character or one of {list(SEPARATORS)}")
        options[key] = value
        options.setdefault("_given", set()).add(key)
    return path, options


def read_delimited(fmt: str, location: str, lang: Optional[str] = None, on_malformed: str = "raise",
                   max_rows: Optional[int] = None, max_line_bytes: Optional[int] = None):
    """Read a delimited file with a header through the column mapping of its spec."""
    from conlst_ray.data.readers import MAX_LINE_BYTES, _open_lines, _RowSink, _id_prefix, _lang_from_name, check_file

    path_text, opt = parse_options(fmt, location)
    path = Path(path_text)
    check_file(path)
    sink = _RowSink(str(path), lang or _lang_from_name(path, None), _id_prefix(path), on_malformed)
    limit = max_line_bytes or MAX_LINE_BYTES
    # decoded line by line (file:line errors for bad bytes, BOM dropped, over-long lines skipped)
    lines = (text for _, text in _open_lines(path, sink, limit, keep_ends=True))
    csv.field_size_limit(max(csv.field_size_limit(), limit))  # a field may be as long as a line
    reader = csv.reader(lines, delimiter=opt["sep"])
    header = next(reader, None)
    if header is None:
        raise CorpusError(f"{path}: empty file (no header)")
    col = _columns(path, header, opt)
    for row in _rows(reader, path):
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        where = f"{path}:{reader.line_num}"
        if not row:
            continue
        if len(row) != len(header):
            sink.bad(where, f"expected {len(header)} columns, found {len(row)}")
            continue
        get = lambda key: row[col[key]] if key in col else None  # noqa: E731
        sink.add(where, get("premise"), get("hypothesis"), get("label"),
                 row_id=get("id") or reader.line_num - 1, lang=get("lang"))
    return sink.table(), sink.report


def _rows(reader, path: Path):
    """The csv reader's rows; its own errors (an unclosed quote running past
    the field limit) name file and line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(f"{path}:{reader.line_num}: {exc}") from None


def _columns(path: Path, header: list, opt: dict) -> dict:
    """Column index of each mapped key. Every column named must exist, except
    the default ``label`` column: without it the rows are unlabelled."""
    col = {}
    for key in ("premise", "hypothesis", "label", "id", "lang"):
        name = opt.get(key)
        if name is None:
            continue
        if name in header:
            col[key] = header.index(name)
        elif key != "label" or "label" in opt.get("_given", ()):
            raise CorpusError(f"{path}:1: no column {name!r} for {key} in the header {header}")
    return col
