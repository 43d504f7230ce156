"""How every reader collects rows: the sink that validates a row against the
task and raises or counts a malformed one (``ReadReport``), and the line
reader with its limits (UTF-8 per line, byte order mark, over-long lines)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow as pa

from conlst_ray.data.columns import record_fields, resolve_columns
from conlst_ray.data.schema import CorpusError, empty_columns, rows_to_table
from conlst_ray.data.task import NLI, Task


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


class RowSink:
    """Collects validated rows of one task; raises or counts on a malformed one."""

    def __init__(self, source: str, lang: str, id_prefix: str, on_malformed: str, task: Task = NLI):
        if on_malformed not in ("raise", "skip"):
            raise ValueError(f"on_malformed must be 'raise' or 'skip', got {on_malformed!r}")
        self.cols = empty_columns()
        self.report = ReadReport(source)
        self.lang, self.id_prefix, self.on_malformed, self.task = lang, id_prefix, on_malformed, task
        self.seen_ids: set[str] = set()

    def bad(self, where: str, reason: str) -> None:
        if self.on_malformed == "raise":
            raise CorpusError(f"{where}: {reason}")
        self.report.skip(where, reason)

    def add(self, where: str, text: Any, text_pair: Any, label: Any, row_id: Any = None,
            lang: Any = None) -> None:
        texts = (("text", text), ("text_pair", text_pair)) if self.task.is_pair else (("text", text),)
        for name, value in texts:
            if value is None:
                return self.bad(where, f"missing {name}")
            if not isinstance(value, str):
                return self.bad(where, f"{name} is a {type(value).__name__} ({value!r}), not text")
            if not value.strip():
                return self.bad(where, f"empty {name}")
        try:
            label_id = self.task.label_id(label)
        except ValueError as exc:
            return self.bad(where, str(exc))
        lang = lang or self.lang
        rid = f"{lang}-{self.id_prefix}-{row_id}"
        if rid in self.seen_ids:
            return self.bad(where, f"duplicate id {row_id!r}")
        self.seen_ids.add(rid)
        for key, value in (("id", rid), ("lang", lang), ("text", text.strip()),
                           ("text_pair", text_pair.strip() if self.task.is_pair else None), ("label", label_id)):
            self.cols[key].append(value)
        self.report.rows += 1

    def table(self) -> pa.Table:
        return rows_to_table(self.cols)


def lang_from_name(path: Path, lang: Optional[str]) -> str:
    """dev-fr.tsv / multinli.train.fr.tsv -> 'fr' unless given."""
    if lang:
        return lang
    stem = path.name.rsplit(".", 1)[0]
    for sep in ("-", ".", "_"):
        if sep in stem:
            return stem.rsplit(sep, 1)[1]
    raise CorpusError(f"{path}: cannot infer the language from the file name; give lang=")


def id_prefix(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


MAX_LINE_BYTES = 1 << 20  # data.max_line_bytes: longer lines are malformed rows, never read whole


def check_file(path: Path) -> None:
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")


def open_lines(path: Path, sink: Optional["RowSink"] = None, max_line_bytes: Optional[int] = MAX_LINE_BYTES,
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


def records_into(sink: RowSink, records: Iterable[tuple[str, Any, Any]], max_rows: Optional[int],
                  given: dict, columns: Optional[dict] = None):
    """Feed (where, default id, record) triples; a record that is a string is
    the reason it could not be parsed. ``columns``: the mapping resolved once
    for a table (Parquet, hub); None = resolved per JSON record."""
    for where, default_id, rec in records:
        if max_rows is not None and sink.report.rows >= max_rows:
            break
        if isinstance(rec, str):
            sink.bad(where, rec)
            continue
        if not isinstance(rec, dict):
            sink.bad(where, "not a JSON object")
            continue
        try:
            cols = columns or resolve_columns(where, list(rec), sink.task, given)
        except CorpusError as exc:
            sink.bad(where, str(exc)[len(where) + 2:])  # the sink names the place itself
            continue
        text, text_pair, label, row_id, lang = record_fields(rec, cols)
        sink.add(where, text, text_pair, label, row_id=default_id if row_id is None else row_id, lang=lang)
