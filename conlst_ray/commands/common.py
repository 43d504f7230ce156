"""What every command line shares: config loading with overrides, the run
directory, starting or joining Ray, and how a command ends: a user error
(bad config, corpus, model path, stale run directory) is one line
``error: ...`` and exit status 2, with the traceback kept in a log file (or
printed with ``--debug``); Ctrl+C says where the run stopped and how to
resume it (exit status 130)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

from conlst_ray.config import ConfigError, config_help, load_config
from conlst_ray.pipeline.errors import failure_line, printable
from conlst_ray.pipeline.ray_setup import init_ray, quiet_ray_loggers
from conlst_ray.storage.mirror import credentials_problem, mask_secrets

__all__ = ["init_ray", "printable"]  # the commands' own imports of what moved to pipeline/

# per user, readable by its owner only: a traceback may quote paths and settings
ERROR_LOG = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "conlst_ray" / "last-error.log"


def keep_traceback(exc: BaseException) -> Optional[Path]:
    """The full traceback in ERROR_LOG (mode 0600); None where it cannot be
    written (the error itself is still reported)."""
    try:
        ERROR_LOG.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(ERROR_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode on O_TRUNC
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(mask_secrets("".join(traceback.format_exception(exc))))
        return ERROR_LOG
    except OSError:
        return None


def guarded(main: Callable[[list], int], argv: Optional[list] = None,
            where_stopped: Optional[Callable[[], str]] = None) -> int:
    """Run a CLI's ``main`` and turn how it fails into an exit status and one line;
    ``where_stopped``: where a run stopped and how to continue it (after Ctrl+C, a full disk)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if "--verbose" in argv:
        os.environ["CONLST_RAY_VERBOSE"] = "1"
    else:  # per command: an earlier --verbose in the same process does not carry over
        os.environ.pop("CONLST_RAY_VERBOSE", None)
        quiet_third_party()
    secret = next(filter(None, (_secret_in(a) for a in argv)), None)
    if secret:  # any argument of any command: a corpus spec, a model, an output path, an override
        print(f"error: {secret}", file=sys.stderr)
        return 2
    try:
        return main(argv)
    except KeyboardInterrupt as exc:  # the library's RunInterrupted knows where the run stopped
        where = getattr(exc, "where", "") or (where_stopped() if where_stopped else "")
        print(f"\ninterrupted{': ' + where if where else ''}", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 -- classified below, re-raised when not ours
        if isinstance(exc, SystemExit):
            raise
        # a full disk says where the run stopped and how to continue it, as after Ctrl+C
        found = failure_line(exc, where_stopped or (lambda: ""))
        if found is None or debug:
            raise
        keep_traceback(exc)
        print(f"error: {found[0]}", file=sys.stderr)
        return 2
    finally:
        from conlst_ray.storage.lock import release_all

        release_all()  # the run directories this command locked, however it ended


def _secret_in(arg: str) -> Optional[str]:
    """The one line refusing a command-line argument that carries credentials
    (``key=value`` named by its key); None for any other."""
    key, sep, value = str(arg).partition("=")
    named = bool(sep) and "://" not in key and key.replace(".", "").replace("_", "").isalnum()
    return credentials_problem(key if named else "argument", value if named else str(arg))


def entry_point(main: Callable[[list], int]) -> Callable:
    """A CLI's ``main(argv)`` that ends as ``guarded`` says."""
    import functools

    @functools.wraps(main)
    def wrapper(argv: Optional[list] = None) -> int:
        return guarded(main, argv)

    return wrapper


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (key=default [range]):\n" + "\n".join(config_help()))
    parser.add_argument("--config", help="YAML config file (defaults < file < overrides)")
    add_debug(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. conl.gamma=0.8")
    return parser


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"print the full traceback of an error (always kept in {ERROR_LOG})")
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party output: transformers' and Ray's logs and progress bars, and "
                             "everything the Ray workers print (default: conlst_ray's own lines only)")


QUIET = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
         "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}


def quiet_third_party() -> None:
    """transformers' loading bars and advice, the hub's bars and Ray's
    warnings off; set in the environment before Ray starts, so that its
    workers inherit it. ``--verbose`` leaves everything on."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    quiet_ray_loggers()


def add_recompute(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recompute", action="store_true",
                        help="redo finished stages and cached outputs that other settings, inputs or models made "
                             "(default: refuse, naming what differs)")


def load_or_report(args):
    """The resolved config, or None after printing a one-line error (the
    command then exits with status 2)."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return None


def parse(parser: argparse.ArgumentParser, argv=None):
    """(args, resolved config); the config is None after a reported error."""
    # intermixed: overrides may come before and after flags (a=1 --resume b=2)
    args = parser.parse_intermixed_args(argv)
    return args, load_or_report(args)


def add_ray_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join ('auto' inside a cluster); default: start a local Ray")

