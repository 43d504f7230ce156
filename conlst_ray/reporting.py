"""Per-language accuracy tables in the layout of the paper's Tables 1-2:
languages as columns, then the average over target languages."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from conlst_ray.config import atomic_write_text


def table_rows(results: dict[str, dict[str, float]], langs: list[str], source_lang: str) -> tuple[list, list]:
    """``results``: row name -> {lang: accuracy}. Returns (header, rows) with
    accuracies in percent and 'avg' = mean over the target languages present."""
    header = ["model"] + langs + ["avg"]
    rows = []
    for name, accs in results.items():
        targets = [accs[lang] for lang in langs if lang in accs and lang != source_lang]
        avg = sum(targets) / len(targets) if targets else float("nan")
        rows.append([name] + [accs.get(lang, float("nan")) * 100 for lang in langs] + [avg * 100])
    return header, rows


def to_markdown(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row[0]] + [f"{v:.1f}" for v in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(header: list, rows: list) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[0]] + [f"{v:.4f}" for v in row[1:]])
    return buf.getvalue()


def write_language_table(results, langs, source_lang, stem: str | Path) -> str:
    """Write ``stem.md`` and ``stem.csv``; return the markdown."""
    header, rows = table_rows(results, langs, source_lang)
    md = to_markdown(header, rows)
    atomic_write_text(f"{stem}.md", md)
    atomic_write_text(f"{stem}.csv", to_csv(header, rows))
    return md
