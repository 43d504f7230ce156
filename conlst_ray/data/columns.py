"""Column mapping: which source column holds each schema field.

A spec maps columns after ``?`` (``jsonl:x.jsonl?text=review&label=stars``);
what it leaves out comes from the task (``data.task.columns``), then from the
defaults (data/task.py). Shared by every reader that has named columns.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import Task

# ?key=column options of a spec, for every format but the two XNLI layouts and
# the benchmark; premise/hypothesis are the NLI names of text/text_pair
MAPPING_KEYS = ("text", "text_pair", "label", "id", "lang")
KEY_ALIASES = {"premise": "text", "hypothesis": "text_pair"}


def split_options(spec: str, location: str, extra: tuple = ()) -> tuple[str, dict]:
    """``LOCATION?text=col&label=col`` -> (location, {field: column}); ``extra``
    names format options (``sep``, ``header``) allowed besides the fields."""
    location, _, query = location.partition("?")
    options: dict = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        key = KEY_ALIASES.get(key, key)
        if key not in MAPPING_KEYS + tuple(extra):
            allowed = list(MAPPING_KEYS) + list(KEY_ALIASES) + list(extra)
            raise CorpusError(f"corpus spec {spec!r}: unknown option {key!r}; options: {', '.join(allowed)}")
        if key in options:
            raise CorpusError(f"corpus spec {spec!r}: option {key!r} given twice")
        options[key] = value
    return location, options


def check_text_pair(where: str, task: Task, given: dict) -> None:
    """A spec that maps a second text for a single-text task is a mistake in one of them."""
    if not task.is_pair and given.get("text_pair"):
        raise CorpusError(f"{where}: text_pair={given['text_pair']!r} is mapped but the task reads single texts "
                          f"(data.task.kind: single)")


def resolve_columns(where: str, available: list, task: Task, given: dict) -> dict:
    """Field -> column name among ``available`` (None: absent). The text
    columns of the task must exist; a label, id or lang column named by the
    spec or the task must exist; an unnamed one may be absent (unlabelled rows)."""
    check_text_pair(where, task, given)
    out = {}
    for key, candidates in task.column_map(given).items():
        found = next((c for c in candidates if c in available), None)
        required = key in ("text", "text_pair") or task.explicit(key, given)
        if found is None and required:
            wanted = " or ".join(repr(c) for c in candidates) if candidates else "a column"
            raise CorpusError(f"{where}: no column {wanted} for {key}; has {list(available)}")
        out[key] = found
    return out


def record_fields(rec: dict, cols: dict) -> tuple:
    get = lambda key: rec.get(cols[key]) if cols.get(key) else None  # noqa: E731
    return get("text"), get("text_pair"), get("label"), get("id"), get("lang")
