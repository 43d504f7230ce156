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
# files that define what a tokenizer does (others, e.g. README, do not)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.json", "merges.txt", "added_tokens.json")
# parsed as JSON by the check; tokenizer.json is parsed once, by the tokenizers library itself
JSON_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.json", "added_tokens.json")


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


AGAIN = "copy the model folder again, or rerun the stage that made it"


def check_model_folder(model_dir, max_length: Optional[int] = None) -> None:
    """The one check of a saved model folder, before anything loads it
    (predict, evaluate, ``load_model``, a resumed stage, the report, the
    Auto classes): a classifier conlst_ray saved, its weights whole, its
    tokenizer files readable. A ModelError naming the folder and what to do
    otherwise. (That the tensors fit the config is checked as the model is
    built: ``ConlstEncoder.load``.)"""
    from conlst_ray.storage.files import safetensors_problem

    if model_dir is None or not str(model_dir).strip():
        raise ModelError("model_dir: give the folder of a trained model (a stage's model/ or a run's model link)")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"{model_dir}: no such model folder")
    if not read_meta(folder):
        raise ModelError(f"{model_dir} is not a model conlst_ray trained (no classification head and labels "
                         f"saved with it)")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelError(f"{model_dir}: holds no {WEIGHTS_FILE}; {AGAIN}")
    damage = safetensors_problem(folder / WEIGHTS_FILE)
    if damage:
        raise ModelError(f"{model_dir}: {damage}; {AGAIN}")
    tokenizer_problem(folder)
    if max_length is None:
        return
    if not isinstance(max_length, int) or max_length < 1:
        raise ModelError(f"max_length {max_length!r}: must be a whole number of at least 1")
    limit = max_text_length(str(folder))
    if limit is not None and max_length > limit:
        raise ModelError(f"max_length {max_length}: {model_dir} has {limit} positions")


def tokenizer_problem(folder: Path) -> None:
    """A ModelError when the folder's tokenizer files are missing or cannot
    be parsed (a tokenizer.json the tokenizers library refuses, a JSON file
    that is not a JSON object)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{folder}: holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): copy the "
                         f"whole model folder, which conlst_ray saves with its tokenizer")
    for name in JSON_TOKENIZER_FILES:
        if (folder / name).is_file():
            try:
                _json_object(folder / name)
            except ModelError:
                raise ModelError(f"{folder}: its tokenizer file {name} is not valid JSON; {AGAIN}") from None
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 -- the library's errors are plain Exceptions
            reason = " ".join(str(exc).split())[:120]
            raise ModelError(f"{folder}: its tokenizer.json cannot be read ({reason}); {AGAIN}") from None
