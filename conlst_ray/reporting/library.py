"""A run as one library call: ``run(cfg) -> RunResult``.

The pipeline (every stage, resumable), then its report, on a resolved
config. ``python -m conlst_ray.run`` and the Python API (``conlst_ray.run``)
both call it; what they differ in is only how they read the config and show
the outcome. A failure the user can fix raises ``RunError`` whose ``reason``
is the one line the command prints after ``error: ``; Ctrl+C raises
``RunInterrupted``, which says where the run stopped and how to continue it.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from conlst_ray.config.stages import NAMES
from conlst_ray.pipeline.errors import RunError, RunInterrupted, failure_line
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.storage import mirror as storage

if TYPE_CHECKING:
    from conlst_ray.config import Config

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where everything a run made is, and what it chose."""
    run_dir: Path
    model: Optional[Path]                    # the model the run handed back (RUN/model)
    stage: Optional[str]                     # which candidate that is, and why
    reason: str = ""
    models: dict = field(default_factory=dict)      # candidate (stage models, their prior corrections) -> folder
    accuracy: dict = field(default_factory=dict)    # split -> row -> language -> accuracy (%)
    seconds: dict = field(default_factory=dict)     # stage -> seconds it took (DONE.json)
    report: str = ""                                # the report's text, as the command prints it


def run(cfg: "Config", resume: bool = False, recompute: bool = False, address: Optional[str] = None,
        stop_after: Optional[str] = None, command: Sequence[str] = ()) -> RunResult:
    """Run (or with ``resume`` continue) the pipeline on ``cfg`` and report
    it. ``command``: the command line that started it, for the line that
    says how to continue an interrupted run (default: one built from the
    config's run name)."""
    state: dict = {}
    try:
        return _run(cfg, resume, recompute, address, stop_after, state)
    except BaseException as exc:  # noqa: BLE001 -- told apart below: Ctrl+C, the user's to fix, or re-raised
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, RunInterrupted):
            raise RunInterrupted(where_it_stopped(state["run"], command, cfg) if "run" in state else "") from None
        if isinstance(exc, Exception):
            _raise_as_run_error(exc, state, command, cfg)
        raise
    finally:  # the run directory is free again, however the run ended (a Python process goes on after it)
        from conlst_ray.storage.lock import release_all

        release_all()


def _raise_as_run_error(exc: Exception, state: dict, command: Sequence[str], cfg: "Config") -> None:
    """``exc`` as a RunError with its one line, when it is the user's to fix
    (or a full disk); returns for anything else, which is re-raised as it is."""
    if isinstance(exc, RunError):
        return
    found = failure_line(exc, lambda: where_it_stopped(state["run"], command, cfg) if "run" in state else "")
    if found is not None:
        raise RunError(*found) from exc


def _run(cfg: "Config", resume: bool, recompute: bool, address: Optional[str], stop_after: Optional[str],
         state: dict) -> RunResult:
    from conlst_ray.data.task import Task
    from conlst_ray.pipeline.preflight import UserError, preflight
    from conlst_ray.pipeline.ray_setup import init_ray
    from conlst_ray.pipeline.stages import run_pipeline
    from conlst_ray.reporting.report import full_report

    if resume and not cfg.run_name:
        raise UserError("--resume continues a run: name it with run_name=... (the folder below output_dir)")
    preflight(cfg)  # every input checked in seconds, before any work
    init_ray(address, cfg=cfg)  # and every resource: nothing written before both pass
    run_dir = RunDir.create(cfg, resume=resume, recompute=recompute)
    state["run"] = run_dir
    log.info(f"[run] {run_dir.root} ({Task.of(cfg.data.task).describe()})")
    models = run_pipeline(cfg, run_dir, stop_after=stop_after)
    if stop_after:
        log.info(f"[run] stopped after {stop_after}; continue with --resume")
        return result_of(cfg, run_dir, models)
    return result_of(cfg, run_dir, models, full_report(cfg, run_dir, models))


def result_of(cfg: "Config", run_dir: RunDir, models: dict, report: str = "") -> RunResult:
    """The RunResult of a run directory's finished stages and report."""
    from conlst_ray.reporting.prior import saved_candidates
    from conlst_ray.reporting.report import with_corrected
    from conlst_ray.reporting.tables import read_table

    record = run_dir.handed_back_record
    chosen = json.loads(record.read_text()) if record.is_file() else {}
    accuracy = {split: {r["model"]: {k: float(v) for k, v in r.items() if k != "model" and v != ""}
                        for r in read_table(run_dir.accuracy_table(split))}
                for split in ("dev", "test") if run_dir.accuracy_table(split).is_file()}
    seconds = {stage: float(done.get("seconds", float("nan"))) for stage in NAMES
               if (done := run_dir.done_record(stage)) is not None}
    return RunResult(run_dir.root, run_dir.handed_back if chosen else None, chosen.get("stage"),
                     chosen.get("reason", ""), with_corrected(models, saved_candidates(run_dir, models)),
                     accuracy, seconds, report)


def where_it_stopped(run_dir: RunDir, command: Sequence[str], cfg: "Config") -> str:
    """The stage an interrupted run stopped in, and the command that continues it."""
    stage = next((s for s in NAMES if storage.exists(run_dir.root / s) and not run_dir.is_done(s)), None)
    argv = list(command) or [f"output_dir={cfg.output_dir}"]
    again = ["python", "-m", "conlst_ray.run", *argv] + ([] if "--resume" in argv else ["--resume"])
    if not any(a.startswith("run_name=") for a in argv):  # a time-stamped name: say which
        again.append(f"run_name={run_dir.root.name}")
    return (f"run {run_dir.root} stopped" + (f" in stage {stage}" if stage else "")
            + f"; continue with: {shlex.join(again)}")
