"""What a saved model folder says about itself -- its file names, what
conlst_ray recorded with it, how many tokens its positions hold -- read
from its JSON files without importing torch, so that the preflight refuses
a bad model or length in a fraction of a second, before any heavy import."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

HEADS_FILE = "conlst_heads.safetensors"
META_FILE = "conlst.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_CODE = "modeling_conlst.py"
FORMAT = 2  # config.json of model type conlst, one weights file


def read_meta(path: str | Path) -> dict:
    """What conlst_ray saved with a model (pooling, num_labels,
    contrastive_dim, task, format); {} for a directory conlst_ray did not
    write (or a hub id)."""
    config = Path(path) / "config.json"
    if config.is_file():
        data = _json_object(config)
        if data.get("model_type") == "conlst":
            return {"pooling": data.get("pooling", "cls"), "num_labels": len(data.get("id2label") or {}),
                    "contrastive_dim": data.get("contrastive_dim", 128), "task": data.get("task"), "format": FORMAT}
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return {}
    return _json_object(meta)


def _json_object(meta: Path) -> dict:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta}: not valid JSON ({exc}); save the model again") from None
    if not isinstance(data, dict):
        raise ModelError(f"{meta}: not valid (expected a JSON object); save the model again")
    return data


class ModelError(ValueError):
    """A model folder that cannot be what it claims (the message names it)."""


# positions of a model family beyond the text (RoBERTa and XLM-R keep 2 for padding offsets)
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}
KNOWN_POSITIONS = {"multilingual-e5-small": 512}


def max_text_length(name_or_path: str) -> Optional[int]:
    """How many tokens a model's position embeddings hold, when it can be
    known without loading it (a local folder, a model named offline); None
    for a hub id."""
    if name_or_path in KNOWN_POSITIONS:
        return KNOWN_POSITIONS[name_or_path]
    config = Path(os.path.expanduser(name_or_path)) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config}: not valid JSON ({exc})") from None
    if data.get("model_type") == "conlst":  # a saved stage model: its encoder's own config
        data = data.get("encoder") or {}
    positions = data.get("max_position_embeddings")
    return positions - POSITION_OFFSET.get(data.get("model_type"), 0) if isinstance(positions, int) else None
