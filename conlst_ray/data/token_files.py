"""Tokenised corpora as memory-mapped Arrow files: tokenise once, share
between the workers of a node.

A corpus is tokenised once (``ray_jobs/tokens.py``) into Arrow IPC files,
one per cached shard, with columns id, lang, pos, label, input_ids
(list<int32>) and optionally token_type_ids (list<int8>). A training worker
opens them with ``pa.memory_map``: the token ids stay in the page cache,
shared by every worker on the node, and a row is a zero-copy NumPy slice.
What a worker holds in its own memory is O(rows) small arrays (offsets,
labels, language codes), never the token lists as Python objects.

``TokenRows`` has the interface of ``training.Encoded`` (``input_ids[i]``,
``token_type_ids[i]``, ``labels``, ``ids``, ``langs``, ``lengths()``), so the
algorithm layer runs on either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from conlst_ray.data.schema import pair_texts
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import write_via_temporary

TOKENIZER_FILE = "_tokenizer.json"
def tokenize_pairs(tokenizer, table: pa.Table, max_length: int) -> pa.Table:
    """text (and text_pair) -> id, lang, pos, label, input_ids, token_type_ids:
    the one place corpus rows are tokenised (truncated, unpadded); a
    single-text corpus (no text_pair) is tokenised as single texts."""
    enc = tokenizer(*pair_texts(table), truncation=True, max_length=max_length, padding=False)
    n = table.num_rows
    cols = {"id": table.column("id"), "lang": table.column("lang"),
            "pos": table.column("pos") if "pos" in table.column_names else pa.array(range(n), pa.int64()),
            "label": (table.column("label").cast(pa.int64()) if "label" in table.column_names
                      else pa.array(np.full(n, -1, np.int64))),
            "input_ids": pa.array(enc["input_ids"], pa.list_(pa.int32()))}
    if "token_type_ids" in enc:
        cols["token_type_ids"] = pa.array(enc["token_type_ids"], pa.list_(pa.int8()))
    return pa.table(cols)


def write_token_file(table: pa.Table, path: Path) -> None:
    """One record batch per file (one zero-copy chunk when mapped), written
    next to ``path`` and renamed: a reader never sees half a file."""
    batch = table.combine_chunks().to_batches(max_chunksize=max(1, table.num_rows))

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            for b in batch:
                writer.write_batch(b)

    write_via_temporary(path, write)


class Ragged:
    """Row i of a list<int> column as a NumPy view, over several mapped
    chunks (one per file); no copy of the token values is made."""

    def __init__(self, chunks: Sequence[pa.ListArray]):
        self._offsets = [c.offsets.to_numpy() for c in chunks]
        self._values = [c.values.to_numpy() for c in chunks]
        self._starts = np.cumsum([0] + [len(c) for c in chunks])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        c = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - self._starts[c]
        off = self._offsets[c]
        return self._values[c][off[j]:off[j + 1]]

    def __iter__(self):
        for c, off in enumerate(self._offsets):
            values = self._values[c]
            for j in range(len(off) - 1):
                yield values[off[j]:off[j + 1]]

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self._offsets]).astype(np.int64) if self._offsets \
            else np.zeros(0, np.int64)


class TokenRows:
    """A tokenised corpus, memory-mapped (see the module docstring)."""

    def __init__(self, tables: Sequence[pa.Table], meta: Optional[dict] = None):
        tables = [t for t in tables if t.num_rows]
        self.table = pa.concat_tables(tables) if tables else None
        self.meta = meta or {}
        chunks = lambda name: [c for t in tables for c in t.column(name).chunks]  # noqa: E731
        self.input_ids = Ragged(chunks("input_ids"))
        has_types = bool(tables) and "token_type_ids" in tables[0].column_names
        self.token_type_ids = Ragged(chunks("token_type_ids")) if has_types else None
        self.labels = (np.concatenate([t.column("label").to_numpy() for t in tables]).astype(np.int64)
                       if tables else np.zeros(0, np.int64))
        # language codes as a small fixed-width array, not one Python str per row
        self.langs = (np.concatenate([t.column("lang").to_numpy(zero_copy_only=False).astype(str)
                                      for t in tables]) if tables else np.zeros(0, "<U1"))

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        return self.input_ids.lengths()

    def labelled(self) -> "TokenRows":
        """The rows with a known label (-1 = unknown): itself when every row
        has one (no copy), else a filtered copy. Public corpora mark doubtful
        rows so (PAWS-X); a training stage must not learn from them."""
        known = self.labels >= 0
        if known.all():
            return self
        return TokenRows([self.table.filter(pa.array(known))], self.meta)

    @property
    def ids(self) -> pa.ChunkedArray:
        """Row ids (Arrow, mapped; convert only what is needed)."""
        return self.table.column("id")


def open_token_rows(root: str | Path, langs: Sequence[str], expect_stamp: Optional[str] = None) -> TokenRows:
    """Memory-map the token files of ``langs`` (in that order) under a
    tokenised corpus ``root``. ``expect_stamp``: the stamp of the tokenizer
    the caller's model uses; token ids made by another tokenizer are
    refused (they would silently index the wrong embeddings). With object
    storage the files of ``langs`` are fetched to this node first."""
    given, root = root, storage.fetch(Path(root) / TOKENIZER_FILE).parent
    meta_path = root / TOKENIZER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root}: not a tokenised corpus (no {TOKENIZER_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if expect_stamp is not None and meta.get("stamp") != expect_stamp:
        raise ValueError(f"{root}: token ids made by tokenizer {meta.get('stamp')} ({meta.get('tokenizer')}), "
                         f"the model's tokenizer is {expect_stamp}: tokenise the corpus again with it")
    tables = []
    for lang in langs:
        files = storage.files(Path(given) / f"lang={lang}", "shard-*.arrow")
        if not files:
            raise FileNotFoundError(f"{root}: no token files for language {lang!r}")
        for f in files:
            tables.append(pa.ipc.open_file(pa.memory_map(str(f), "r")).read_all())
    return TokenRows(tables, meta)


class _AlignedColumn:
    def __init__(self, primary: Ragged, fallback: Ragged, index: np.ndarray):
        self.primary, self.fallback, self.index = primary, fallback, index

    def __getitem__(self, i) -> np.ndarray:
        j = self.index[i]
        return self.primary[j] if j >= 0 else self.fallback[i]


class AlignedRows:
    """Rows of ``primary`` re-ordered to follow ``fallback``'s rows: row i is
    ``primary[index[i]]``, or ``fallback[i]`` where ``index[i] < 0`` (e.g.
    back-translations aligned with the target corpus)."""

    def __init__(self, primary: TokenRows, fallback: TokenRows, index: np.ndarray):
        self.input_ids = _AlignedColumn(primary.input_ids, fallback.input_ids, index)
        self.token_type_ids = (None if fallback.token_type_ids is None or primary.token_type_ids is None
                               else _AlignedColumn(primary.token_type_ids, fallback.token_type_ids, index))
        self.labels, self.langs = fallback.labels, fallback.langs
        self.covered = index >= 0

    def __len__(self) -> int:
        return len(self.labels)
