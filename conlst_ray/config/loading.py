"""Loading a config: defaults < YAML file < command-line ``key=value``
overrides, every error one line naming the key (and the file): unknown keys
with the closest valid key suggested, values out of range with the range,
a key given twice in a YAML file with both lines. Paths are made absolute
once, here, by the keys' ``path`` metadata."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml
from pydantic import ValidationError

from conlst_ray.config.keys import base_type, find_key, get, keys
from conlst_ray.config.sections import Config, ConfigError
from conlst_ray.storage.files import atomic_write_text
from conlst_ray.storage.mirror import mask_secrets

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from pydantic import BaseModel


# keys that moved: the old name gets a pointer to the new one
MOVED_KEYS = {"model.num_labels": "the number of classes is the length of data.task.labels"}
FILE_FORMATS = ("xnli_tsv", "xnli_mt_tsv", "tsv", "csv", "jsonl", "parquet")   # corpus specs whose location is a path
NAMED_MODELS = ("tiny-bert", "synthetic", "multilingual-e5-small")             # names, not paths


# -- building, with one-line errors ------------------------------------------------------------

def _unknown_key(prefix: str, key: str, valid: list[str], origin: str) -> ConfigError:
    full = f"{prefix}{key}"
    where = f" (in {origin})" if origin else ""
    if full in MOVED_KEYS:
        return ConfigError(f"config key '{full}' is gone{where}: {MOVED_KEYS[full]}")
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{full}'{where}{hint}")


def _section_fields(cls, loc: tuple) -> list[str]:
    """The keys of the section at ``loc`` (the path to it) in model ``cls``."""
    for part in loc:
        cls = base_type(cls.model_fields[part].annotation)
    return list(cls.model_fields)


def _range_text(bounds: dict) -> str:
    ge, gt, le, lt = (bounds.get(k) for k in ("ge", "gt", "le", "lt"))
    low = f"[{ge}" if ge is not None else (f"({gt}" if gt is not None else "(-inf")
    high = f"{le}]" if le is not None else (f"{lt})" if lt is not None else "inf)")
    return f"{low}, {high}"


SHOWN_CHARS = 200  # of a value quoted in an error line


class _Shown:
    """A value as an error line quotes it: its repr, secrets masked, cut at
    SHOWN_CHARS (a huge value must not make a huge line)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        text = mask_secrets(reprlib_repr(self.value))
        return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def reprlib_repr(value) -> str:
    """repr of ``value`` without building the whole text of a huge one."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = SHOWN_CHARS, SHOWN_CHARS, 20, 20, 4
    return short.repr(value)


def _one_line(cls, error: dict, origin: str = "") -> ConfigError:
    """A pydantic error as a one-line message naming the key (and the file)."""
    key = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    value, kind = _Shown(error.get("input")), error["type"]
    if kind == "extra_forbidden":  # Section's extra="forbid": a key no section has
        *section, name = (str(p) for p in error["loc"])
        prefix = "".join(f"{p}." for p in section)
        return _unknown_key(prefix, name, _section_fields(cls, tuple(section)), origin)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return ConfigError(f"{key or 'config'}: expected a mapping, got {value!r}")
    if kind == "value_error" and isinstance((error.get("ctx") or {}).get("error"), ConfigError):
        return error["ctx"]["error"]  # a section's own check (data.task) says it best
    try:
        field = find_key(cls, key)
    except KeyError:
        return ConfigError(f"{key or 'config'}: {error['msg']}")
    if kind == "finite_number":
        return ConfigError(f"{key} = {value!r} is not a finite number")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return ConfigError(f"{key} = {value!r} is out of range; allowed: {_range_text(field.bounds())}")
    if kind == "literal_error":
        return ConfigError(f"{key} = {value!r} is not allowed; choose one of {list(field.choices)}")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        tp = base_type(field.field.annotation)
        name = getattr(tp, "__name__", str(tp))
        if value.value is None:
            return ConfigError(f"{key}: null is not allowed (expected {name})")
        return ConfigError(f"{key}: expected {name}, got {value!r}")
    return ConfigError(f"{key}: {error['msg']}")


def build(cls, data: dict, origin: str = ""):
    """Model ``cls`` from a nested dict, checking keys, types and ranges; an
    unknown key is named before any value error (it is the likelier slip)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping, got {_Shown(data)!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise _one_line(cls, first, origin) from None


def config_from_dict(data: dict, cls=Config):
    return build(cls, data)


def to_dict(cfg: "BaseModel") -> dict:
    return cfg.model_dump()


# -- YAML and overrides --------------------------------------------------------------------

def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "search_space":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str, cls=Config) -> tuple[list[str], Any]:
    """``conl.gamma=0.8`` -> (["conl", "gamma"], 0.8): the value is parsed as
    YAML, except for a text key, whose value is the text as given
    (``run_name=0123`` stays '0123', not YAML 1.1's octal 83)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. conl.gamma=0.8)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    if _is_text_key(cls, key) and raw.strip() not in ("null", "~"):
        return key.split("."), raw.strip()
    try:
        value = yaml_value(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def _is_text_key(cls, key: str) -> bool:
    try:
        return base_type(find_key(cls, key).field.annotation) is str
    except KeyError:  # an unknown key: named when the config is built
        return False


def _nest(path: list[str], value: Any) -> dict:
    out: dict = {}
    cur = out
    for part in path[:-1]:
        cur = cur.setdefault(part, {})
    cur[path[-1]] = value
    return out


class DuplicateKeyError(ValueError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML
    keeps the last silently: a config would not say what it runs) and any
    alias (``*name``): a few lines of nested aliases expand to billions of
    values (an alias bomb), and a config has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"line {mark.line + 1}: aliases (*name) are not allowed "
                                              f"in a config: write the value out", None)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} appears twice, lines {seen[key] + 1} and "
                                        f"{key_node.start_mark.line + 1}")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads yes/no/on/off as booleans: `labels: [yes, no]` would become
# [True, False] and `target_langs: [de, no]` would lose Norwegian. Read them
# as YAML 1.2 does: only true and false are booleans.
UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))


def yaml_value(text: str) -> Any:
    """A YAML scalar or collection as a config reads it (see UniqueKeyLoader)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a directory; --config takes a YAML file (e.g. tune_configs/demo.yaml)")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of config sections")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple = (), cls=Config):
    """Defaults < YAML file at ``path`` < ``key=value`` overrides."""
    merged: dict = {}
    origin = ""
    if path is not None:
        merged = read_yaml(path)
        origin = str(path)
        build(cls, merged, origin=origin)  # errors name the file before overrides muddle them
    for text in overrides:
        keys_, value = parse_override(text, cls)
        merged = _deep_merge(merged, _nest(keys_, value))
    cfg = build(cls, merged, origin=origin if not overrides else f"{origin or 'defaults'} + overrides")
    return absolute_paths(cfg) if isinstance(cfg, Config) else cfg


def save_config(cfg: "BaseModel", path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, loadable again with ``load_config``."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# -- paths -----------------------------------------------------------------------------------

def _absolute_spec(spec: Optional[str]) -> Optional[str]:
    fmt, sep, location = (spec or "").partition(":")
    if not sep or fmt not in FILE_FORMATS or os.path.isabs(location):
        return spec
    path, q, options = location.partition("?")  # column options of tsv/csv specs stay as they are
    return f"{fmt}:{os.path.abspath(path)}{q}{options}"


def _absolute_local(name: Optional[str]) -> Optional[str]:
    """A relative path that exists here becomes absolute; hub ids stay as they are."""
    if not name or name in NAMED_MODELS or os.path.isabs(name) or not os.path.exists(name):
        return name
    return os.path.abspath(name)


def _absolute_dir(path: Optional[str]) -> Optional[str]:
    """A directory (may not exist yet); a URI (s3://...) stays as it is."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


ABSOLUTE = {"corpus": _absolute_spec, "model": _absolute_local, "dir": _absolute_dir}


def absolute_paths(cfg: Config) -> Config:
    """Relative paths are read from the current directory -- but Ray Train
    workers and Tune trials run in directories of their own, so every key
    whose metadata says it is a path is made absolute here, once, in the
    process that loads the config."""
    cfg = cfg.model_copy(deep=True)
    for key in keys(Config):
        if key.path:
            *parents, last = key.name.split(".")
            owner = get(cfg, ".".join(parents)) if parents else cfg
            setattr(owner, last, ABSOLUTE[key.path](getattr(owner, last)))
    return cfg


# -- help ------------------------------------------------------------------------------------

def config_help(cls=Config, prefix: str = "") -> list[str]:
    """One line per key with its default and allowed range, for ``--help``."""
    lines = []
    for key in keys(cls, prefix):
        rng = ""
        if key.choices:
            rng = f" {{{'|'.join(key.choices)}}}"
        elif key.bounds():
            rng = " " + " ".join(f"{k}{v}" for k, v in key.bounds().items())
        text = f"  {key.name}={key.default()!r}{rng}"
        if key.field.description:
            text += f"  # {key.field.description}"
        lines.append(text)
    return lines


def with_values(cfg: "BaseModel", params: dict):
    """A copy of ``cfg`` with dotted ``params`` set (``{"conl.gamma": 0.8}``),
    checked like any config. A float that is a whole number is accepted for
    an integer key (search spaces draw floats)."""
    data = to_dict(cfg)
    for key, value in params.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        whole = isinstance(value, float) and value.is_integer()
        node[last] = int(value) if whole and isinstance(node.get(last), int) and not isinstance(node.get(last), bool) \
            else value
    return build(type(cfg), data)
