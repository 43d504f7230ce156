"""One command at a time in a run directory: its lock file (``RUN/.lock``,
the holder's pid, host and start time), taken, released, taken over from a
holder that has ended, and watched by the holder's Ray Train workers, which
stop when their command is gone (``ray_jobs/worker.DriverWatch``)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

LOCK_FILE = ".lock"
# after taking over the lock of a command that ended: how long its orphaned workers may need to see it
# (they look every second, every 10 s in object storage; DriverWatch)
ORPHAN_GRACE_S = {False: 2.0, True: 11.0}
_HELD: list = []  # the run directories this process has locked


class RunInUse(RuntimeError):
    """Another command works in this run directory."""


def _read(path: Path) -> dict | None:
    """The holder a lock file names; None for no file, or for a file that is
    not one of ours (half-written by a process killed as it wrote, or another
    tool's ``.lock``, such as pytest's in its numbered folders)."""
    try:
        path = storage.fetch(path)
        holder = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):  # pyarrow's ArrowInvalid (a path above a mirror) is a ValueError
        return None
    return holder if isinstance(holder, dict) and {"pid", "host"} <= holder.keys() else None


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _running(holder: dict) -> bool:
    """Whether the process that wrote a lock still runs (on another host: assumed)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def acquire(root: Path) -> None:
    """Lock run directory ``root`` for this process, or raise RunInUse naming
    the process that holds it. A lock left by a process that has ended
    (kill -9, a lost node on this host) is taken over. In object storage the
    check and the write are two requests, not one atomic step."""
    path, me = root / LOCK_FILE, _this_process()
    root.mkdir(parents=True, exist_ok=True)
    holder = _read(path)
    if holder is None and not storage.is_remote(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            _HELD.append(root)
            return
        except FileExistsError:
            holder = _read(path)
    if holder and holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
        return  # this process holds it already (the Python API, a test)
    if holder and _running(holder):
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
        raise RunInUse(f"run directory {root} is in use by process {holder.get('pid')} on "
                       f"{holder.get('host')} (since {since}): wait for it to end or stop it; if that "
                       f"process is gone, remove {path}")
    atomic_write_text(path, json.dumps(me))
    storage.publish(path)
    _HELD.append(root)
    if holder:  # a command that ended: its orphaned workers stop before this one writes anything
        time.sleep(ORPHAN_GRACE_S[storage.is_remote(path)])


def release(root: Path) -> None:
    """Give up this process's lock on run directory ``root``."""
    path = root / LOCK_FILE
    holder = _read(path) if path.is_file() else None
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        storage.remove(path)
    if root in _HELD:
        _HELD.remove(root)


def release_all() -> None:
    """Every lock this process holds (at the end of a command, however it ends)."""
    for root in list(_HELD):
        release(root)


def covering_lock(folder: Path, levels: int = 4) -> tuple[Path, dict] | None:
    """The lock of the run directory that holds ``folder`` (a stage folder, a
    per-language or trial sub-run) and its holder; None when none is held."""
    for parent in list(Path(folder).parents)[:levels]:
        if storage.is_remote(parent) != storage.is_remote(folder):  # above the run's mirror folder
            break
        holder = _read(parent / LOCK_FILE)
        if holder:
            return parent / LOCK_FILE, holder
    return None


def lock_lost(path: Path, holder: dict) -> str | None:
    """Why ``holder`` no longer holds the lock at ``path`` (it ended, or
    another command took the run directory over); None while it does."""
    now = _read(path)
    if now != holder:
        return (f"the run directory was taken over by process {now.get('pid')} on {now.get('host')}" if now
                else "the run directory's lock was removed")
    if not _running(holder):
        return f"the command that started it (process {holder.get('pid')}) has ended"
    return None


def in_progress(folder: str | Path) -> str | None:
    """One line for a read-only command (predict, evaluate) whose model lies
    in a run directory a live command is working in: what it reads is that
    run's state now, which the run may still replace; None otherwise."""
    found = covering_lock(Path(folder).resolve() if not storage.is_remote(folder) else Path(folder))
    if found is None or not _running(found[1]):
        return None
    path, holder = found
    return (f"run {path.parent} is in progress (process {holder.get('pid')} on {holder.get('host')}): reading "
            f"{folder} as it is now; the run may still replace it")
