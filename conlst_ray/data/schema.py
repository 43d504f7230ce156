"""The one row schema every corpus is read into.

id          str   unique across languages (the reader prefixes the language)
lang        str   language code
premise     str
hypothesis  str
label       int   0 entailment, 1 neutral, 2 contradiction; -1 unknown

This is the Hugging Face ``xnli`` / ``multi_nli`` label order. XTREME's own
code uses another order; never mix them.
"""

from __future__ import annotations

import pyarrow as pa

LABEL_NAMES = ("entailment", "neutral", "contradiction")
UNKNOWN_LABEL = -1
# Spellings seen in the wild. XNLI-MT writes "contradictory".
LABEL_IDS = {
    "entailment": 0,
    "neutral": 1,
    "contradiction": 2,
    "contradictory": 2,
}

ROW_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("lang", pa.string(), nullable=False),
    pa.field("premise", pa.string(), nullable=False),
    pa.field("hypothesis", pa.string(), nullable=False),
    pa.field("label", pa.int64(), nullable=False),
])
COLUMNS = tuple(ROW_SCHEMA.names)


class CorpusError(ValueError):
    """A corpus cannot be read; the message names the file (and line)."""


def rows_to_table(rows: dict[str, list]) -> pa.Table:
    """Columns (a dict of equal-length lists) -> a table in ROW_SCHEMA."""
    return pa.table({name: rows[name] for name in COLUMNS}, schema=ROW_SCHEMA)


def empty_columns() -> dict[str, list]:
    return {name: [] for name in COLUMNS}


def without_labels(table: pa.Table) -> pa.Table:
    """The same rows with every label set to unknown (-1): what a truly
    unlabelled target corpus looks like to the training stages."""
    idx = table.schema.get_field_index("label")
    return table.set_column(idx, ROW_SCHEMA.field("label"),
                            pa.array([UNKNOWN_LABEL] * table.num_rows, pa.int64()))
