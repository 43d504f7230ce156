"""The one row schema every corpus is read into, whatever the task.

id          str   unique across languages (the reader prefixes the language)
lang        str   language code
text        str   the text (NLI: the premise)
text_pair   str   the second text of a pair task (NLI: the hypothesis); null
                  in a single-text task
label       int   index into the task's label names (data/task.py); -1 unknown

The NLI task keeps the Hugging Face ``xnli`` / ``multi_nli`` label order
(0 entailment, 1 neutral, 2 contradiction). XTREME's own code uses another
order; never mix them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ROW_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("lang", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("text_pair", pa.string(), nullable=True),
    pa.field("label", pa.int64(), nullable=False),
])
COLUMNS = tuple(ROW_SCHEMA.names)


class CorpusError(ValueError):
    """A corpus cannot be read; the message names the file (and line)."""


def rows_to_table(rows: dict[str, list]) -> pa.Table:
    """Columns (a dict of equal-length lists) -> a table in ROW_SCHEMA; a
    single-text corpus may leave out ``text_pair``."""
    n = len(rows["id"])
    return pa.table({name: rows[name] if name in rows else [None] * n for name in COLUMNS}, schema=ROW_SCHEMA)


def empty_columns() -> dict[str, list]:
    return {name: [] for name in COLUMNS}


def is_pair_table(table: pa.Table) -> bool:
    """Do the rows carry a second text? (A single-text corpus has none at all;
    the readers never mix the two.)"""
    nulls = table.column("text_pair").null_count
    if 0 < nulls < table.num_rows:
        raise CorpusError(f"{nulls} of {table.num_rows} rows lack text_pair: a corpus is all pairs or all single texts")
    return table.num_rows > 0 and nulls == 0


def pair_texts(table: pa.Table) -> tuple[list, list | None]:
    """(texts, second texts or None): the tokenizer's two arguments."""
    return table.column("text").to_pylist(), (table.column("text_pair").to_pylist() if is_pair_table(table) else None)


def unique_in_order(values: np.ndarray) -> list[str]:
    """Distinct values in order of first occurrence, as Python strings."""
    uniq, first = np.unique(values, return_index=True)
    return [str(uniq[i]) for i in np.argsort(first)]
