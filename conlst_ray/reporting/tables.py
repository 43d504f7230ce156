"""Tables as markdown and CSV files: one writer for every table the project
prints (per-language accuracy in the layout of the paper's Tables 1-2,
calibration bands, ablations, stage costs, Tune trials)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from conlst_ray.storage.files import atomic_write_text


def _cell(v, digits: int | None) -> str:
    """Floats with ``digits`` decimals, or 4 significant digits when None."""
    if isinstance(v, float):
        return "-" if v != v else (f"{v:.4g}" if digits is None else f"{v:.{digits}f}")
    return "-" if v is None else str(v)


def to_markdown(header: list, rows: list, digits: int | None = 1) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list, rows: list) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v) for v in row]
                      for row in rows])
    return buf.getvalue()


def read_table(path: str | Path) -> list[dict]:
    """The rows of a CSV table this module wrote, as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_table(stem: str | Path, header: list, rows: list, digits: int | None = 1,
                markdown: Callable[[list, list], str] | None = None) -> str:
    """Write ``stem.md`` and ``stem.csv`` (each atomically); return the markdown."""
    md = markdown(header, rows) if markdown else to_markdown(header, rows, digits)
    atomic_write_text(f"{stem}.md", md)
    atomic_write_text(f"{stem}.csv", to_csv(header, rows))
    return md


def language_rows(results: dict[str, dict[str, float]], langs: list[str], source_lang: str) -> tuple[list, list]:
    """``results``: row name -> {lang: accuracy}. Returns (header, rows) in the
    layout of the paper's Tables 1-2: languages as columns, accuracies in
    percent, 'avg' = mean over the target languages present."""
    header = ["model"] + langs + ["avg"]
    rows = []
    for name, accs in results.items():
        targets = [accs[lang] for lang in langs if lang in accs and lang != source_lang]
        avg = sum(targets) / len(targets) if targets else float("nan")
        rows.append([name] + [accs.get(lang, float("nan")) * 100 for lang in langs] + [avg * 100])
    return header, rows


def write_language_table(results, langs, source_lang, stem: str | Path) -> str:
    """Write ``stem.md`` and ``stem.csv``; return the markdown."""
    return write_table(stem, *language_rows(results, langs, source_lang))
