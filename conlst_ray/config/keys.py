"""The config's keys as data: every dotted key with its field, metadata and
allowed values -- for ``--help``, the search space, preflight, absolute
paths and the stage fingerprints."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Key:
    name: str                 # dotted, e.g. conl.gamma
    field: FieldInfo
    section: bool             # a nested model (its keys below it)

    @property
    def meta(self) -> dict:
        return self.field.json_schema_extra or {}

    @property
    def stages(self) -> tuple:
        return tuple(self.meta.get("stages", ()))

    @property
    def path(self):
        return self.meta.get("path")

    @property
    def choices(self) -> tuple:
        return literal_choices(self.field.annotation)

    def bounds(self) -> dict:
        """ge/gt/le/lt of the field (pydantic keeps them as metadata objects)."""
        out = {}
        for m in self.field.metadata:
            for name in ("ge", "gt", "le", "lt"):
                if getattr(m, name, None) is not None:
                    out[name] = getattr(m, name)
        return out

    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)


def base_type(annotation) -> Any:
    """int for Optional[Annotated[int, ...]], the model class for a section."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def literal_choices(annotation) -> tuple:
    tp = base_type(annotation)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()


def is_section(annotation) -> bool:
    tp = base_type(annotation)
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def keys(cls, prefix: str = "", sections: bool = False) -> Iterator[Key]:
    """Every leaf key of model ``cls`` (and, with ``sections``, every section)."""
    for name, field in cls.model_fields.items():
        if is_section(field.annotation):
            if sections:
                yield Key(f"{prefix}{name}", field, True)
            yield from keys(base_type(field.annotation), f"{prefix}{name}.", sections)
        else:
            yield Key(f"{prefix}{name}", field, False)


def find_key(cls, dotted: str) -> Key:
    for key in keys(cls, sections=True):
        if key.name == dotted:
            return key
    raise KeyError(dotted)


def get(obj, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
