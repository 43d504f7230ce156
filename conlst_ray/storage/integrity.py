"""Cached files that cannot lie: each one is sealed when written (its size
and a content hash in a small file beside it, ``.<name>.sum``) and checked
before it is trusted again. A file that fails the check -- zeroed in place,
cut short, replaced -- is rebuilt by its cache, with one line saying so; it
is never read as if it were valid.

A file cached before seals existed has none: it is sealed on its first
check (damage done before that cannot be seen, as before). In object
storage a file is only looked for, not read (``damage``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

CHUNK = 1 << 22


def seal_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.sum")


def content_hash(path: Path, data=None) -> str:
    """blake2b of the file's bytes (about 1 GB/s: a cache's files are
    checked in seconds beside the minutes they save); ``data``: those bytes
    when the caller holds them already (a buffer: not read again)."""
    h = hashlib.blake2b(digest_size=16)
    if data is not None:
        h.update(memoryview(data).cast("B"))
        return h.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def seal(path: str | os.PathLike, publish: bool = True, data=None) -> dict:
    """Record ``path``'s size and content hash beside it (published with it
    in object storage, unless the file is this node's alone: ``publish``);
    ``data``: the file's bytes, when the caller holds them. Returns the record."""
    path = Path(path)
    record = {"bytes": path.stat().st_size, "blake2b": content_hash(path, data)}
    atomic_write_text(seal_path(path), json.dumps(record))
    if publish:
        storage.publish(seal_path(path))
    return record


def damage(path: str | os.PathLike, data=None) -> Optional[str]:
    """What is wrong with a cached file: missing, or not what was sealed
    (its size, its content); None when it is whole. An unsealed file is
    sealed now and taken as whole. In object storage only presence is
    checked: checking the bytes would fetch the whole cache to this node.
    ``data``: the file's bytes, when the caller has read them already."""
    path = Path(path)
    if storage.is_remote(path):
        return None if storage.exists(path) else f"{path.name} is missing"
    if not path.is_file():
        return f"{path.name} is missing"
    if not seal_path(path).is_file():
        seal(path, publish=False, data=data)
        return None
    record = _record(seal_path(path))
    if record is None:
        return f"{path.name}'s seal ({seal_path(path).name}) is unreadable"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"{path.name} has {size} bytes, {record.get('bytes')} when written"
    if content_hash(path, data) != record.get("blake2b"):
        return f"{path.name} was changed since it was written (its content hash differs)"
    return None


def discard_if_damaged(path: str | os.PathLike) -> Optional[str]:
    """``damage(path)``, and a damaged file discarded so that its cache
    computes it again; None (the file kept) when it is whole."""
    problem = damage(path)
    if problem:
        discard(path)
    return problem


def discard(path: str | os.PathLike) -> None:
    """Remove a damaged file and its seal (so that its cache rebuilds it)."""
    for p in (Path(path), seal_path(path)):
        storage.remove(p)


def _record(path: Path) -> Optional[dict]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
