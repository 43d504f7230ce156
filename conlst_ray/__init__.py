"""conlst_ray: CoNLST (contrastive negative learning + self-training) on Ray.

    from conlst_ray import load_model, run   # the Python API (conlst_ray/api.py)

Progress and messages go through ``logging``, to the logger ``conlst_ray``
(each module logs under its own name below it). By default they are printed
one per line to the standard output, as the commands show them; to send them
elsewhere, replace that logger's handlers. ``message_prefix`` and ``quiet``
are the two ways the package itself shapes them.
"""

import contextlib
import contextvars
import logging
import sys

__version__ = "0.1.0"

_API = ("Classifier", "RunResult", "load_model", "run")
LOGGER = "conlst_ray"
# per thread of work (a context): the tag of the language a per-language run is on, and whether to print at all
_PREFIX = contextvars.ContextVar("conlst_ray_message_prefix", default="")
_QUIET = contextvars.ContextVar("conlst_ray_quiet", default=False)


class _Lines(logging.StreamHandler):
    """Each message as one line on the standard output of the moment (a
    test's capture, a Ray worker's redirected stream: looked up at every
    line, not kept from import time), flushed at once, so a progress line
    is seen when it is written also when the output goes to a file."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get() and super().filter(record)

    def format(self, record: logging.LogRecord) -> str:
        return _PREFIX.get() + super().format(record)


def _package_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        logger.addHandler(_Lines())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # printed once, whatever the application does with the root logger
    return logger


_package_logger()


@contextlib.contextmanager
def message_prefix(prefix: str):
    """Every line printed inside starts with ``prefix`` (``[fr] `` for the
    French run of per-language mode)."""
    token = _PREFIX.set(_PREFIX.get() + prefix)
    try:
        yield
    finally:
        _PREFIX.reset(token)


@contextlib.contextmanager
def quiet():
    """No line printed inside: work whose lines another caller already shows
    (the coverage check preflight repeats, tokens a worker finds cached)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def __getattr__(name: str):
    """The API on first use: ``import conlst_ray`` alone stays cheap (every
    command and worker imports the package) and loads neither torch nor Ray."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
