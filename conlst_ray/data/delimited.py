"""Column-mapped delimited files: ``tsv:PATH`` and ``csv:PATH``.

Real corpora come in many layouts, so which columns hold the text, the
second text and the label is said in the spec, after ``?`` (or once for
every corpus in ``data.task.columns``):

    tsv:test.tsv                                   columns text/premise, text_pair/hypothesis, label
    csv:test.csv?text=sentence1&text_pair=sentence2&label=gold_label
    csv:reviews_{lang}.csv?text=review_body&label=stars
    tsv:dev-{lang}.tsv?header=none&text=0&text_pair=1&label=2

Keys: ``text``, ``text_pair`` (``premise``/``hypothesis`` also work),
``label`` (a column may be absent: unlabelled rows), ``id`` and ``lang``
(optional columns), ``sep`` (``tab``, ``comma``, ``semicolon``, ``pipe`` or
one character; default by format), ``header`` (``none``: the file has no
header and columns are named by position from 0; a row's id is then its line
number) and ``quote`` (``double``: fields may be quoted as the csv module
reads them, the default for csv; ``none``: a double quote is text, the
default for tsv, whose corpora carry unbalanced quotes). Other columns are
ignored. Labels are the task's names (any case) or ids. Errors name the file
and line.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from conlst_ray.data.columns import check_text_pair, resolve_columns, split_options
from conlst_ray.data.rows import MAX_LINE_BYTES, RowSink, check_file, id_prefix, lang_from_name, open_lines
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import NLI, Task

SEPARATORS = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
FORMAT_KEYS = ("sep", "header", "quote")


def parse_options(fmt: str, location: str) -> tuple[str, dict, dict]:
    """``PATH?key=value&...`` -> (path, column mapping, format options)."""
    path, options = split_options(f"{fmt}:{location}", location, FORMAT_KEYS)
    # TSV corpora (XNLI, MultiNLI, PAWS-X) are not quoted and do contain stray
    # double quotes: a csv-style quote there would swallow lines
    layout = {"sep": "\t" if fmt == "tsv" else ",", "header": True, "quote": fmt == "csv"}
    if "sep" in options:
        sep = options.pop("sep")
        sep = SEPARATORS.get(sep, sep)
        if len(sep) != 1:
            raise CorpusError(f"{fmt}:{location}: sep must be one character or one of {list(SEPARATORS)}")
        layout["sep"] = sep
    if "header" in options:
        value = options.pop("header")
        if value not in ("none", "first"):
            raise CorpusError(f"{fmt}:{location}: header must be 'none' (no header line) or 'first'")
        layout["header"] = value == "first"
    if "quote" in options:
        value = options.pop("quote")
        if value not in ("none", "double"):
            raise CorpusError(f"{fmt}:{location}: quote must be 'none' (fields are never quoted) or 'double'")
        layout["quote"] = value == "double"
    return path, options, layout


def read_delimited(fmt: str, location: str, lang: Optional[str] = None, on_malformed: str = "raise",
                   max_rows: Optional[int] = None, max_line_bytes: Optional[int] = None, task: Task = NLI):
    """Read a delimited file through the column mapping of its spec."""
    path_text, given, layout = parse_options(fmt, location)
    path = Path(path_text)
    check_file(path)
    sink = RowSink(str(path), lang or lang_from_name(path, None), id_prefix(path), on_malformed, task)
    limit = max_line_bytes or MAX_LINE_BYTES
    # decoded line by line (file:line errors for bad bytes, BOM dropped, over-long lines skipped)
    lines = (text for _, text in open_lines(path, sink, limit, keep_ends=True))
    csv.field_size_limit(max(csv.field_size_limit(), limit))  # a field may be as long as a line
    reader = csv.reader(lines, delimiter=layout["sep"],
                        **({} if layout["quote"] else {"quoting": csv.QUOTE_NONE}))
    rows = _rows(reader, path)
    if layout["header"]:
        _, header = next(rows, (0, None))
        if header is None:
            raise CorpusError(f"{path}: empty file (no header)")
        first_id = -1  # ids count data rows from 1
        col = _indices(resolve_columns(f"{path}:1", header, task, given), header)
    else:
        header, first_id = None, 0
        col = _positions(path, given, task)
    width = len(header) if header is not None else max(col.values()) + 1
    for start, row in rows:
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        where = f"{path}:{start}"
        if not row:
            continue
        if reader.line_num > start and layout["quote"] and len(row) < width:  # the row ran over several lines
            sink.bad(where, f"a quote opened on this line runs to line {reader.line_num}: unclosed quote?")
            continue
        if header is not None and len(row) != width:
            sink.bad(where, f"expected {width} columns, found {len(row)}")
            continue
        if len(row) < width:  # header=none: name the mapped column that is not there
            absent = ", ".join(f"{key}={i}" for key, i in col.items() if i >= len(row))
            sink.bad(where, f"no column {absent}: the row has {len(row)} columns (0..{len(row) - 1})")
            continue
        field = {key: row[i] for key, i in col.items()}
        sink.add(where, field.get("text"), field.get("text_pair"), field.get("label"),
                 row_id=field.get("id") or start + first_id, lang=field.get("lang"))
    return sink.table(), sink.report


def _rows(reader, path: Path):
    """(line the row began on, row) of the csv reader; its own errors (an
    unclosed quote running past the field limit) name that line too."""
    while True:
        start = reader.line_num + 1
        try:
            yield start, next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(f"{path}:{start}: {exc} (a quote opened on this line is never closed?)") from None


def _indices(columns: dict, header: list) -> dict:
    return {key: header.index(name) for key, name in columns.items() if name is not None}


def _positions(path: Path, given: dict, task: Task) -> dict:
    """header=none: every field is a column number, the text fields must be given."""
    check_text_pair(str(path), task, given)
    mapping = {key: task.mapped(key, given) for key in ("text", "text_pair", "label", "id", "lang")}
    needed = ["text", "text_pair"] if task.is_pair else ["text"]
    missing = [key for key in needed if mapping[key] is None]
    if missing:
        raise CorpusError(f"{path}: header=none needs the column number of {', '.join(missing)} "
                          f"(e.g. ?header=none&text=0{'&text_pair=1' if task.is_pair else ''}&label=2)")
    out = {}
    for key, value in mapping.items():
        if value is None or (key == "text_pair" and not task.is_pair):
            continue
        if not str(value).isdigit():
            raise CorpusError(f"{path}: header=none names columns by number from 0; {key}={value!r} is not one")
        out[key] = int(value)
    return out
