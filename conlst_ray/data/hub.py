"""Hugging Face hub data sets (``hf:DATASET[:CONFIG]:SPLIT[?MAP]``) -> ROW_SCHEMA."""

from __future__ import annotations

from typing import Optional

from conlst_ray.data.columns import resolve_columns
from conlst_ray.data.rows import RowSink, records_into
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import NLI, Task, is_number


def _class_label_names(ds, column: Optional[str]) -> Optional[list]:
    """The names of a ``ClassLabel`` label column (ids in the data set's own order)."""
    feature = getattr(ds, "features", {}).get(column) if column else None
    return list(feature.names) if feature is not None and hasattr(feature, "names") else None


def rows_from_hf_dataset(ds, lang: str, id_prefix: str, on_malformed: str = "raise",
                         max_rows: Optional[int] = None, task: Task = NLI, given: Optional[dict] = None):
    """Map a ``datasets.Dataset`` to ROW_SCHEMA through the column mapping
    (``facebook/xnli`` and ``nyu-mll/multi_nli`` need none: premise,
    hypothesis, label). A ``ClassLabel`` column whose names are the task's
    is read by name, so a data set that orders its classes otherwise still
    lands on the task's ids; other label values go through the task as they are."""
    given = given or {}
    columns = resolve_columns(id_prefix, list(ds.column_names), task, given)
    if columns["id"] is None and "pairID" in ds.column_names:
        columns["id"] = "pairID"
    names = _class_label_names(ds, columns["label"])
    by_name = names if names and all(_known_name(task, n) for n in names) else None
    sink = RowSink(id_prefix, lang, id_prefix.replace("/", "_"), on_malformed, task)

    def records():
        for i, rec in enumerate(ds):
            if by_name is not None and isinstance(rec.get(columns["label"]), int) and rec[columns["label"]] >= 0:
                rec = {**rec, columns["label"]: by_name[rec[columns["label"]]]}
            yield f"{id_prefix}:row {i}", i, rec

    records_into(sink, records(), max_rows, given, columns)
    return sink.table(), sink.report


def _known_name(task: Task, name: str) -> bool:
    try:
        return not is_number(name) and task.label_id(name) >= 0
    except ValueError:
        return False


def read_hf(where: tuple, lang: Optional[str] = None, on_malformed: str = "raise", max_rows: Optional[int] = None,
            task: Task = NLI, given: Optional[dict] = None):
    """A hub data set, ``where`` = (dataset, config or "", split) (downloads
    unless cached; fails fast with HF_HUB_OFFLINE=1)."""
    import datasets  # imported lazily: slow to import, and only this reader needs it

    dataset, config, split = where
    try:
        ds = datasets.load_dataset(dataset, config or None, split=split)
    except Exception as exc:
        raise CorpusError(f"hf:{dataset}:{config or ''}:{split}: cannot load ({type(exc).__name__}: {exc})") from None
    lang = lang or config or "en"
    return rows_from_hf_dataset(ds, lang, f"{dataset}:{config or ''}:{split}", on_malformed, max_rows, task, given)
