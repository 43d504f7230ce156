"""How a run fails, told to its user: which exceptions are the user's to
fix (a bad config, corpus, model folder, a stale or busy run directory),
found behind whatever Ray wrapped them in; a full disk; and the one line
each becomes -- secrets masked, length capped. The command line prints that
line; the library raises it as ``RunError``."""

from __future__ import annotations

import errno
from typing import Callable, Optional

from conlst_ray.config import ConfigError
from conlst_ray.config.provenance import StaleError
from conlst_ray.data.schema import CorpusError
from conlst_ray.pipeline.preflight import UserError
from conlst_ray.storage.mirror import mask_secrets


class RunError(RuntimeError):
    """A run that ended with an error the user can fix; ``reason`` is the one
    line the command prints after ``error: ``, ``where`` where the run
    stopped and how to continue it (when it got that far)."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(reason)
        self.reason, self.where = reason, where


class RunInterrupted(KeyboardInterrupt):
    """Ctrl+C in a run; ``where``: the stage it stopped in and the command that continues it."""

    def __init__(self, where: str = ""):
        super().__init__(where)
        self.where = where


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def user_error_types() -> tuple:
    """The exceptions whose message is the user's to act on."""
    from conlst_ray.models.e5 import E5Error
    from conlst_ray.models.model_files import ModelError
    from conlst_ray.models.translation import TranslationConfigError
    from conlst_ray.storage.lock import RunInUse
    from conlst_ray.storage.mirror import CredentialsInURI

    return (ConfigError, CorpusError, StaleError, TranslationConfigError, E5Error, ModelError, UserError,
            FileExistsError, CredentialsInURI, RunInUse, RunError)


def _causes(exc: BaseException):
    """``exc`` and every exception behind it, nearest first: causes, contexts,
    what Ray wraps (a task error, a failed Train worker, its controller)."""
    seen, stack = set(), [exc]
    while stack:
        e = stack.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
        failures = getattr(e, "worker_failures", None) or getattr(e, "errors", None)
        if isinstance(failures, dict):
            stack += list(failures.values())
        elif isinstance(failures, (list, tuple)):
            stack += [f for f in failures if isinstance(f, BaseException)]


def find_user_error(exc: BaseException) -> Optional[BaseException]:
    """The user error behind ``exc``: itself, or a cause wrapped by Ray (a
    task error, a failed Train worker) or re-raised along the way."""
    types = user_error_types()
    for e in _causes(exc):
        if isinstance(e, types):
            inner = getattr(e, "cause", None)  # Ray's RayTaskError(X) carries the X it wraps
            return inner if isinstance(inner, types) else e
    return None


def disk_full(exc: BaseException) -> Optional[str]:
    """What to tell the user when a write behind ``exc`` found its disk (or
    quota) full; None otherwise. Files are written whole or not at all, so
    the run directory holds nothing half-written and a resume continues it."""
    full = next((e for e in _causes(exc) if isinstance(e, OSError) and e.errno in DISK_FULL), None)
    if full is None:
        return None
    where = f" writing {full.filename}" if full.filename else ""
    return (f"no space left on the device{where} ({full.strerror}): free space there, or set output_dir "
            f"(or model.cache_dir) to a larger disk")


def failure_line(exc: BaseException, where_stopped: Callable[[], str]) -> Optional[tuple[str, str]]:
    """The one line a failure is to its user, and where the run stopped:
    the user error behind ``exc``, or a full disk with where the run stopped
    and how to continue it (``where_stopped()``); None for anything else,
    which is a bug to show whole. The command prints the line after
    ``error: ``; the library raises it as RunError."""
    cause = find_user_error(exc)
    if cause is not None:
        return one_line(cause), ""
    full = disk_full(exc)
    if full is None:
        return None
    where = where_stopped()
    return printable(f"{full}{'; ' + where if where else ''}"), where


LINE_CHARS = 2000  # an error line longer than this is cut (a value quoted in it may be huge)


def printable(text: str) -> str:
    """An error line as it may be shown or kept: secrets masked, length capped."""
    text = mask_secrets(text)
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS] + f"... ({len(text)} characters)"


def one_line(exc: BaseException) -> str:
    """The message of a (possibly Ray-wrapped) user error, first line only,
    its secrets masked and its length capped."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if marker in text:  # Ray prefixes the remote traceback
        text = text.rsplit(marker, 1)[1]
    return printable(" ".join(text.strip().splitlines()[:1]) if "\n" in text.strip() else text.strip())
