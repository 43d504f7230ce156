"""What is being classified: single texts or text pairs, and the label set.

CoNLST does not depend on NLI: complementary labels, the negative pool,
FlexMatch and mixup only need class ids. A ``Task`` says

* ``kind``: ``pair`` (NLI, paraphrase: the encoder reads ``text [SEP]
  text_pair``) or ``single`` (sentiment, topic, intent: ``text`` alone);
* ``labels``: the class names, whose order defines the ids 0..C-1 (C >= 2);
* ``aliases``: other spellings of a name found in real files (XNLI-MT writes
  ``contradictory``);
* ``columns``: which source column holds each schema field, for every corpus
  that does not map its own (``?text=...`` in a spec).

The default is the NLI task of the paper (labels in the Hugging Face
``xnli`` / ``multi_nli`` order), so configs that say nothing are unchanged.

How a value in a file becomes a label id (``label_id``):

1. ``None``, ``""`` and ``-1`` are unknown (unlabelled rows);
2. a value whose text is a label name or alias (any case) is that label;
3. otherwise an integer 0..C-1 is an id -- unless some label name is itself
   a number (``labels: ["1", "2", "3", "4", "5"]`` for star ratings): then
   numbers are matched by name only, so a ``0`` can never pass for ``"1"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_ALIASES = {"contradictory": "contradiction"}
UNKNOWN_LABEL = -1
KINDS = ("pair", "single")
# schema field -> the source columns tried, in order, when nothing maps it:
# generic names first, then the NLI names every existing NLI file uses
DEFAULT_COLUMNS = {"text": ("text", "premise"), "text_pair": ("text_pair", "hypothesis"),
                   "label": ("label",), "id": ("id",), "lang": ("lang",)}
FIELDS = tuple(DEFAULT_COLUMNS)


def is_number(text) -> bool:
    """A label written as an integer ("3", "-1")."""
    return str(text).strip().lstrip("-").isdigit()


@dataclass(frozen=True)
class Task:
    kind: str = "pair"
    labels: tuple = NLI_LABELS
    aliases: Optional[Mapping[str, str]] = None   # None: NLI's spellings for the NLI labels, else none
    columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.aliases is None:
            object.__setattr__(self, "aliases", dict(NLI_ALIASES) if tuple(self.labels) == NLI_LABELS else {})
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r}: expected one of {list(KINDS)}")
        names = [str(n).strip() for n in self.labels]
        if len(names) < 2 or any(not n for n in names):
            raise ValueError(f"task labels {list(self.labels)!r}: need at least two non-empty names")
        lowered = [n.lower() for n in names]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"task labels {names!r}: a name is given twice (names are compared without case)")
        for alias, target in self.aliases.items():
            if str(target).strip().lower() not in lowered:
                raise ValueError(f"task label alias {alias!r} -> {target!r}: {target!r} is not a label name")
        unknown = set(self.columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"task columns {sorted(unknown)}: fields are {list(FIELDS)}")
        object.__setattr__(self, "labels", tuple(names))

    @classmethod
    def of(cls, task_cfg=None) -> "Task":
        """The task of a config section (``data.task``); None = NLI."""
        if task_cfg is None or isinstance(task_cfg, Task):
            return task_cfg or cls()
        aliases = None if task_cfg.label_aliases is None else dict(task_cfg.label_aliases)
        return cls(task_cfg.kind, tuple(task_cfg.labels), aliases, dict(task_cfg.columns))

    @property
    def is_pair(self) -> bool:
        return self.kind == "pair"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def describe(self) -> str:
        kind = "text pairs" if self.is_pair else "single texts"
        return f"{kind}, {self.num_classes} classes: {', '.join(self.labels)}"

    # -- labels ------------------------------------------------------------------
    # derived once per task, not per row: label_id runs for every row a reader reads
    @cached_property
    def _by_name(self) -> dict:
        ids = {name.lower(): i for i, name in enumerate(self.labels)}
        ids.update({str(a).strip().lower(): ids[str(t).strip().lower()] for a, t in self.aliases.items()})
        return ids

    @cached_property
    def _numeric_names(self) -> bool:
        return any(is_number(n) for n in self.labels)

    def label_id(self, value: Any) -> int:
        """A label as found in a file -> its id (see the module docstring);
        ValueError naming the value and what was expected."""
        if value is None or value == "" or (not isinstance(value, bool) and value == UNKNOWN_LABEL):
            return UNKNOWN_LABEL
        if isinstance(value, bool):
            raise ValueError(f"unknown label {value!r}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        by_name = self._by_name
        key = str(value).strip().lower()
        if key in by_name:
            return by_name[key]
        if key == str(UNKNOWN_LABEL):
            return UNKNOWN_LABEL
        numeric_names = self._numeric_names
        if is_number(key) and not numeric_names:
            if 0 <= int(key) < self.num_classes:
                return int(key)
            raise ValueError(f"unknown label id {value!r} (expected 0-{self.num_classes - 1} or -1)")
        expected = sorted(by_name) if numeric_names else sorted(by_name) + [f"0-{self.num_classes - 1}"]
        raise ValueError(f"unknown label {value!r} (expected one of {expected})")

    # -- columns -----------------------------------------------------------------
    def column_map(self, given: Optional[Mapping[str, str]] = None) -> dict:
        """Schema field -> source column(s) to try: a spec's own mapping
        (``given``), else ``columns`` of the task, else the defaults. A
        single-text task never reads ``text_pair``."""
        out = {}
        for key, defaults in DEFAULT_COLUMNS.items():
            if key == "text_pair" and not self.is_pair:
                continue
            chosen = self.mapped(key, given)
            out[key] = (chosen,) if chosen is not None else defaults
        return out

    def explicit(self, key: str, given: Optional[Mapping[str, str]] = None) -> bool:
        """Was ``key`` mapped by the spec or the task (a missing column is then an error)?"""
        return self.mapped(key, given) is not None

    def mapped(self, key: str, given: Optional[Mapping[str, str]] = None):
        """The column ``key`` is mapped to by the spec, else by the task, else
        None. Column 0 is a column (``header=none``), not "unset"."""
        for source in (given or {}, self.columns):
            value = source.get(key)
            if value is not None and value != "":
                return value
        return None


NLI = Task()
