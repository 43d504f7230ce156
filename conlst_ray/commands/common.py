"""What every command line shares: config loading with overrides, the run
directory, starting or joining Ray, and how a command ends: a user error
(bad config, corpus, model path, stale run directory) is one line
``error: ...`` and exit status 2, with the traceback kept in a log file (or
printed with ``--debug``); Ctrl+C says where the run stopped and how to
resume it (exit status 130)."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

from conlst_ray.config import ConfigError, config_help, load_config
from conlst_ray.config.provenance import StaleError
from conlst_ray.data.schema import CorpusError
from conlst_ray.pipeline.preflight import UserError, check_resources, check_shared_output
from conlst_ray.storage.mirror import mask_secrets

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
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


def user_error_types() -> tuple:
    from conlst_ray.models.e5 import E5Error
    from conlst_ray.models.model_files import ModelError
    from conlst_ray.models.translation import TranslationConfigError
    from conlst_ray.storage.lock import RunInUse
    from conlst_ray.storage.mirror import CredentialsInURI

    return (ConfigError, CorpusError, StaleError, TranslationConfigError, E5Error, ModelError, UserError,
            FileExistsError, CredentialsInURI, RunInUse)


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
    try:
        return main(argv)
    except KeyboardInterrupt:
        where = where_stopped() if where_stopped else ""
        print(f"\ninterrupted{': ' + where if where else ''}", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 -- classified below, re-raised when not ours
        if isinstance(exc, SystemExit):
            raise
        cause = find_user_error(exc)
        full = disk_full(exc) if cause is None else None
        if (cause is None and full is None) or debug:
            raise
        keep_traceback(exc)
        if full:  # where the run stopped and how to continue it, as after Ctrl+C
            where = where_stopped() if where_stopped else ""
            print(printable(f"error: {full}{'; ' + where if where else ''}"), file=sys.stderr)
        else:
            print(f"error: {one_line(cause)}", file=sys.stderr)
        return 2
    finally:
        from conlst_ray.storage.lock import release_all

        release_all()  # the run directories this command locked, however it ended


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


def quiet_ray_loggers() -> None:
    """Ray's own warnings off (token authentication, deprecations), Ray
    Data's progress reports kept: they are the pseudo-labelling job's progress.
    Ray sets its loggers up when imported, so this runs again after that."""
    import logging

    if os.environ.get("CONLST_RAY_VERBOSE") == "1":
        return
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.INFO)


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


ADDRESS = re.compile(r"auto|local|(ray://)?[A-Za-z0-9._-]+:\d{1,5}")


def init_ray(address=None, num_cpus=None, cfg=None):
    """Start a local Ray or join ``address``; with ``cfg``, refuse at once
    what the cluster cannot give (a worker that can never be placed waits
    silently forever)."""
    if address is not None and not ADDRESS.fullmatch(address):
        raise UserError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    import ray

    quiet_ray_loggers()
    # no --address: a Ray of our own, not one a `ray start` left on this machine (whose
    # resources preflight did not check); `ray job submit` sets RAY_ADDRESS and is joined
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"
    if cfg is not None and address == "local" and not ray.is_initialized():
        check_resources(cfg, local_resources(num_cpus))  # seconds before a local Ray would be up
    if not ray.is_initialized():
        # workers' output is kept in Ray's session logs; --verbose shows it here
        import logging

        verbose = os.environ.get("CONLST_RAY_VERBOSE") == "1"
        ray.init(address=address, num_cpus=num_cpus if address == "local" else None, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)
        quiet_ray_loggers()
    if cfg is not None:
        check_resources(cfg, ray.cluster_resources())
        check_shared_output(cfg)
    return ray


def local_resources(num_cpus=None) -> dict:
    """What a local Ray started here will have: this machine's CPUs (or
    ``num_cpus``) and the GPUs torch sees."""
    import os

    import torch

    return {"CPU": num_cpus or os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
