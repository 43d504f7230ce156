"""The Python API: label texts with a trained model, run the pipeline.

    from conlst_ray import load_model, run

    result = run("tune_configs/xnli_e5_small.yaml", {"data.target_langs": ["fr", "zh"]})
    model = load_model(result.model)                   # the model the run handed back
    model.predict(["Il pleut."], ["Le sol est mouillé."])
    # one dict per pair: {'label': ..., 'confidence': ..., 'probabilities': {'entailment': ..., ...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from conlst_ray.pipeline.errors import RunError
from conlst_ray.reporting.library import RunResult
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


def run(config: Optional[str | Path] = None, overrides: Optional[dict] = None, address: Optional[str] = None,
        resume: bool = False) -> RunResult:
    """``python -m conlst_ray.run`` from Python: the whole pipeline on
    ``config`` (the embedded default when None) with ``overrides`` (dotted
    keys: ``{"seed": 1, "conl.gamma": 0.8}``). Returns where everything is;
    a failure raises ``RunError`` with the command's one-line reason."""
    from conlst_ray.config import ConfigError, load_config
    from conlst_ray.pipeline.errors import printable
    from conlst_ray.reporting import library

    texts = [f"{k}={_value(v)}" for k, v in (overrides or {}).items()]
    try:
        cfg = load_config(config, texts)
    except ConfigError as exc:
        raise RunError(printable(str(exc))) from None
    command = (["--config", str(config)] if config else []) + texts + (["--address", address] if address else [])
    return library.run(cfg, resume=resume, address=address, command=command)


def _value(v) -> str:
    """An override's value as its command-line text: sequences (lists,
    tuples) and mappings as JSON, which the config reads as YAML."""
    if isinstance(v, (tuple, set, frozenset)):
        v = list(v)
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)
