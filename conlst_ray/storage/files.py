"""Writing files so that nothing is ever half-written, and telling a
safetensors file cut short (written before that was so) from a whole one."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path


def _file_mode() -> int:
    """The mode a new file gets under this process's umask (a temporary file
    is made 0600: its mode is set before the rename)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never half-written."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``atomic_write_text`` for bytes."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), _file_mode())
        os.replace(tmp, p)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: say which (disk full)
            raise OSError(exc.errno, exc.strerror, str(p)) from exc
        raise


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read whole (its header unreadable, or
    shorter than the tensors it declares); None when it is whole."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n)) if 8 + n <= size else None
    except (struct.error, ValueError):
        header = None
    if not isinstance(header, dict):
        return f"its weights ({path.name}) are unreadable"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"its weights ({path.name}) are cut short: {size} of {8 + n + end} bytes"
    return None
