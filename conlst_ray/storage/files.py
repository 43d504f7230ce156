"""Writing files so that nothing is ever half-written, and telling a
safetensors file cut short (written before that was so) from a whole one."""

from __future__ import annotations

import json
import math
import os
import re
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
    write_via_temporary(path, lambda tmp: tmp.write_bytes(data))


def named_error(exc: OSError, path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> OSError:
    """``exc`` naming the file it was writing (``path``, not its temporary
    ``tmp``): a failed write() names no file, and pyarrow's write errors name
    none and carry their errno only in their text ("[errno 28] No space left
    on device"), so a full disk could not say where it was full."""
    if exc.filename and str(exc.filename) != str(tmp):
        return exc
    found = re.search(r"\[errno (\d+)\]", str(exc))
    code = exc.errno or (int(found.group(1)) if found else None)
    named = OSError(code, os.strerror(code) if code else str(exc), str(path))
    named.__cause__ = exc
    return named


def write_via_temporary(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (a name of its own,
    given the mode a new file gets), then renamed: a reader never sees half
    a file, a failed write leaves none, and its error names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp makes it 0600
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise named_error(exc, path, tmp) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# bytes per element of the dtypes a safetensors header names
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER = 100_000_000  # the safetensors format's own limit


def safetensors_header(path: Path) -> tuple[dict, int] | str:
    """(name -> {dtype, shape, data_offsets}, header bytes) of a safetensors
    file, or why its header cannot be read."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n)) if 8 + n <= size and n <= MAX_HEADER else None
    except (struct.error, ValueError):
        header = None
    if not isinstance(header, dict):
        return f"its weights ({path.name}) are unreadable (no safetensors header)"
    header.pop("__metadata__", None)
    return header, n


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read whole: its header unreadable,
    no tensors in it, a tensor whose bytes do not match its dtype and shape,
    or a file shorter or longer than the tensors it declares (cut short,
    bytes appended: safetensors refuses both); None when it is whole."""
    read = safetensors_header(path)
    if isinstance(read, str):
        return read
    header, n = read
    if not header:
        return f"its weights ({path.name}) hold no tensors"
    end = 0
    for name, t in header.items():
        try:
            begin, stop = (int(x) for x in t["data_offsets"])
            want = DTYPE_BYTES[t["dtype"]] * math.prod(int(d) for d in t["shape"])
        except (KeyError, TypeError, ValueError):
            return f"its weights ({path.name}) are unreadable (tensor {name!r} badly described)"
        if stop - begin != want:
            return f"its weights ({path.name}) are unreadable (tensor {name!r}: {stop - begin} bytes for {want})"
        end = max(end, stop)
    size = path.stat().st_size
    if 8 + n + end != size:
        how = "cut short" if size < 8 + n + end else "longer than its tensors (bytes appended)"
        return f"its weights ({path.name}) are {how}: {size} bytes, its header declares {8 + n + end}"
    return None
