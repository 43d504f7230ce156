"""Provenance: every cached or finished artefact records what made it, so a
rerun never returns results of other settings, inputs or models.

A fingerprint is a JSON-able dict:

    {"config": {dotted key: value, ...},   the keys that affect the artefact
     "inputs": {name: stamp, ...},         input files (size, mtime), model weights (sha256),
                                           upstream artefacts (their digest)
     "conlst_ray": version}

Two fingerprints agree when these parts are equal; ``differences`` names what
changed in one line each. ``STAGE_KEYS`` says which config keys each pipeline
stage depends on (a section covers its keys), from the keys' metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel

from conlst_ray import __version__
from conlst_ray.config.keys import keys
from conlst_ray.config.loading import FILE_FORMATS
from conlst_ray.config.sections import Config
from conlst_ray.config.stages import NAMES, downstream
from conlst_ray.storage import mirror as storage


def stage_keys(stage: str) -> list[str]:
    """The config keys (exact keys or whole sections) a stage's results
    depend on, read from the keys' ``stages`` metadata (config/sections.py)."""
    return [key.name for key in keys(Config, sections=True) if stage in key.stages]


STAGE_KEYS = {stage: stage_keys(stage) for stage in NAMES}
# a recomputed stage invalidates the stages that read its output (config/stages.py)
DOWNSTREAM = {stage: downstream(stage) for stage in NAMES}


class StaleError(RuntimeError):
    """An artefact on disk was made by other settings, inputs or models."""


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "search_space":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_values(cfg: "BaseModel", keys: Iterable[str]) -> dict:
    """The flattened config entries covered by ``keys`` (exact keys or section prefixes)."""
    flat = flatten(cfg.model_dump())
    keys = list(keys)
    return {k: v for k, v in flat.items()
            if any(k == p or k.startswith(p + ".") for p in keys) and k not in EXECUTION_KEYS}


# How a stage runs, not what it computes (the same result up to float
# rounding): changing them never makes a finished stage stale.
EXECUTION_KEYS = {"source.grad_accum", "conl.grad_accum", "ssl.grad_accum"}


def file_stamp(path: str | os.PathLike) -> list:
    """[size, mtime_ns] of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_dir():
        return [[str(f.relative_to(p)), *file_stamp(f)] for f in sorted(p.rglob("*")) if f.is_file()]
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def spec_files(spec: str | None, langs: Iterable[str]) -> dict:
    """Stamps of the local files a corpus spec names (``{lang}`` expanded);
    hub data sets and the embedded benchmark have none (their config keys
    stand for them)."""

    fmt, sep, location = (spec or "").partition(":")
    if not sep or fmt not in FILE_FORMATS:
        return {}
    path = location.partition("?")[0]
    out = {}
    for lang in dict.fromkeys(langs):
        p = path.replace("{lang}", lang)
        if os.path.exists(p):
            out[p] = file_stamp(p)
    return out


_WEIGHTS_CACHE: dict = {}


def weights_stamp(model_dir: str | os.PathLike) -> str:
    """sha256 over a model folder's weight files (cached per file size and
    mtime); a folder in object storage is fetched to this node first."""
    model_dir = storage.fetch(model_dir)
    files = sorted(f for f in Path(model_dir).glob("*") if f.suffix in (".safetensors", ".bin", ".pt"))
    h = hashlib.sha256()
    for f in files:
        key = (str(f), *file_stamp(f))
        if key not in _WEIGHTS_CACHE:
            fh = hashlib.sha256()
            with open(f, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 22), b""):
                    fh.update(block)
            _WEIGHTS_CACHE[key] = fh.hexdigest()
        h.update(f.name.encode() + _WEIGHTS_CACHE[key].encode())
    return h.hexdigest()[:16] if files else "no-weights"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def canonical(value):
    """One JSON form of ``value`` (models and dataclasses as dicts, tuples as
    lists): what is compared is what was stored, so a fingerprint read back
    from disk equals a fresh one made from the same settings."""
    def plain(v):
        if isinstance(v, BaseModel):
            return v.model_dump()
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.asdict(v)
        return str(v)

    return json.loads(json.dumps(value, default=plain))


def fingerprint(config: dict, inputs: dict | None = None, keys: list | None = None) -> dict:
    """``keys``: the key prefixes ``config`` was taken with, so that a new
    config can be compared before any work starts."""
    return canonical({"config": config, "inputs": inputs or {}, "conlst_ray": __version__,
                      "keys": keys or sorted(config)})


def stage_fingerprint(stage: str, cfg: "Config", inputs: dict | None = None) -> dict:
    return fingerprint(config_values(cfg, STAGE_KEYS[stage]), inputs, STAGE_KEYS[stage])


def differences(old: dict | None, new: dict) -> list[str]:
    """What changed from ``old`` to ``new``, one short item each (empty: they agree)."""
    if not old:
        return ["made before conlst_ray recorded what makes a result"]
    out = []
    oc, nc = old.get("config", {}), new.get("config", {})
    for key in sorted(set(oc) | set(nc)):
        if oc.get(key) != nc.get(key):
            out.append(f"{key} {oc.get(key)!r} -> {nc.get(key)!r}")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for key in sorted(set(oi) | set(ni)):
        if oi.get(key) != ni.get(key):
            out.append(f"{key} changed")
    if old.get("conlst_ray") != new.get("conlst_ray"):
        out.append(f"conlst_ray {old.get('conlst_ray')} -> {new.get('conlst_ray')}")
    return out


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
