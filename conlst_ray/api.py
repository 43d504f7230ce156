"""The Python API: label texts with a trained model, run the pipeline.

    from conlst_ray import load_model, run

    result = run("tune_configs/xnli_e5_small.yaml", {"data.target_langs": ["fr", "zh"]})
    model = load_model(result.model)                   # the model the run handed back
    model.predict(["Il pleut."], ["Le sol est mouillé."])
    # one dict per pair: {'label': ..., 'confidence': ..., 'probabilities': {'entailment': ..., ...}}
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from conlst_ray.training.classifier import Classifier

__all__ = ["Classifier", "RunError", "RunResult", "load_model", "run"]


def load_model(model_dir: str | Path, device: Optional[str] = None, max_length: int = 128) -> Classifier:
    """A saved model (a stage's ``model/`` or a run's ``model`` link, or
    either in object storage: ``s3://bucket/runs/r/ssl/model``), ready to predict."""
    from conlst_ray.models.model_files import check_model_folder
    from conlst_ray.storage import mirror as storage

    if model_dir is None or not str(model_dir).strip():
        check_model_folder(model_dir, max_length)  # the one-line error, before any lookup
    return Classifier(storage.fetch(storage.mirror(model_dir)), device, max_length)


class RunError(RuntimeError):
    """A run that ended with an error; ``reason`` is the one line the command printed."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class _Tee:
    """Writes to the real stream and keeps a copy (the command's error line)."""

    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@dataclass
class RunResult:
    run_dir: Path
    model: Optional[Path]                    # the model the run handed back (RUN/model)
    stage: Optional[str]                     # which stage that is, and why
    reason: str = ""
    models: dict = field(default_factory=dict)      # candidate (stage models, their prior corrections) -> folder
    accuracy: dict = field(default_factory=dict)    # split -> row -> language -> accuracy (%)


def run(config: Optional[str | Path] = None, overrides: Optional[dict] = None, address: Optional[str] = None,
        resume: bool = False) -> RunResult:
    """``python -m conlst_ray.run`` from Python: the whole pipeline on
    ``config`` (the embedded default when None) with ``overrides`` (dotted
    keys: ``{"seed": 1, "conl.gamma": 0.8}``). Returns where everything is."""
    from conlst_ray.commands import run as run_command
    from conlst_ray.reporting.prior import saved_candidates
    from conlst_ray.reporting.report import finished_models, with_corrected

    argv = (["--config", str(config)] if config else []) + [f"{k}={_value(v)}" for k, v in (overrides or {}).items()]
    argv += (["--address", address] if address else []) + (["--resume"] if resume else [])
    state: dict = {}
    tee = _Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):
        status = run_command.main(argv, state=state)
    if status != 0:
        said = [line for line in "".join(tee.lines).splitlines() if line.startswith("error: ")]
        reason = said[-1][len("error: "):] if said else f"exit status {status}"
        raise RunError(f"python -m conlst_ray.run {' '.join(argv)}: {reason}", reason)
    run_dir, cfg = state["run"], state["cfg"]
    record = run_dir.handed_back_record
    chosen = json.loads(record.read_text()) if record.is_file() else {}
    models = finished_models(cfg, run_dir)
    return RunResult(run_dir.root, run_dir.handed_back if chosen else None, chosen.get("stage"),
                     chosen.get("reason", ""), with_corrected(models, saved_candidates(run_dir, models)),
                     _accuracy(run_dir))


def _value(v) -> str:
    """An override's value as its command-line text: sequences (lists,
    tuples) and mappings as JSON, which the config reads as YAML."""
    if isinstance(v, (tuple, set, frozenset)):
        v = list(v)
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


def _accuracy(run) -> dict:
    from conlst_ray.reporting.tables import read_rows

    return {split: {r["model"]: {k: float(v) for k, v in r.items() if k != "model" and v != ""}
                    for r in read_rows(run.accuracy_table(split))}
            for split in ("dev", "test") if run.accuracy_table(split).is_file()}
