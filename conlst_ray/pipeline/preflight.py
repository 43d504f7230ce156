"""Checks before any work starts: every corpus spec of a run resolved and its
first rows read, every model path and checkpoint looked at, the translation
model's language coverage, the output folder writable. Seconds, on the
driver, no Ray; all problems are reported together, each naming its key.

Without this, a bad target corpus or an empty ``model.source_checkpoint``
surfaces only after source training and pseudo-labelling (minutes to hours
on real data), as an error from deep inside a Ray job.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from conlst_ray.config import NAMED_MODELS, Config
from conlst_ray.config.keys import corpus_langs, get, keys
from conlst_ray.data.corpora import read_options
from conlst_ray.data.readers import parse_spec, read_corpus

PREVIEW_ROWS = 3


class UserError(ValueError):
    """Something the user can fix (a path, a key); the message says what."""


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else with a slash is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_model(key: str, name: str | None, need_weights: bool = False) -> list[str]:
    """A local folder must hold a model (config.json, and weights where
    ``need_weights``); a hub id is checked for its form only (the network is
    not asked here)."""
    if not name or name in NAMED_MODELS:
        return []
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not path.is_dir():
            return [f"{key}: {name} is a file, not a model folder"]
        if not (path / "config.json").is_file():
            return [f"{key}: {name} holds no model (config.json missing)"]
        weights = [f for f in path.iterdir() if f.suffix in (".safetensors", ".bin")]
        if need_weights and not weights:
            return [f"{key}: {name} holds no weights (*.safetensors or *.bin)"]
        return []
    if _looks_like_path(name):
        return [f"{key}: {name} does not exist"]
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # noqa: BLE001 -- its own message is about repo ids, ours names the key
        return [f"{key}: {name!r} is neither an existing folder nor a hub id (owner/name)"]
    return []


def check_checkpoint_labels(cfg) -> list[str]:
    """A fine-tuned source checkpoint must classify the task's labels: a
    3-class NLI model given to a 2-class task would fail only at load time
    (or, worse, with matching sizes, train on the wrong meaning of each id)."""
    if not cfg.model.source_checkpoint or not Path(cfg.model.source_checkpoint).is_dir():
        return []
    from conlst_ray.models.encoder import read_meta

    saved = read_meta(cfg.model.source_checkpoint)
    if not saved:
        return []
    labels = list(cfg.data.task.labels)
    named = saved.get("task", {}).get("labels")
    if saved.get("num_labels") != len(labels) or (named or labels) != labels:
        return [f"model.source_checkpoint: {cfg.model.source_checkpoint} classifies "
                f"{named or str(saved.get('num_labels')) + ' classes'} but data.task.labels is {labels}"]
    return []


def check_corpora(cfg) -> list[str]:
    """Read the first rows of every corpus the run reads, for every language
    it reads it in (hub data sets and the embedded benchmark are checked for
    their form only)."""

    d = cfg.data
    jobs = [(key.name, get(cfg, key.name), corpus_langs(cfg, key.name)) for key in keys(Config) if key.path == "corpus"]
    problems = []
    for key, spec, langs in jobs:
        if not spec:
            continue
        try:
            fmt, _ = parse_spec(spec)
        except Exception as exc:  # noqa: BLE001 -- reported with the key
            problems.append(f"{key}: {exc}")
            continue
        if fmt in ("hf", "synthetic"):  # generated (checked with its config) or remote
            continue
        for lang in langs:
            try:
                table, _ = read_corpus(spec, lang, **read_options(d, PREVIEW_ROWS))
                if table.num_rows == 0:
                    problems.append(f"{key}: {spec.replace('{lang}', lang)} has no rows for language {lang!r}")
            except Exception as exc:  # noqa: BLE001 -- a corpus error already names file and line
                problems.append(f"{key} ({lang}): {exc}")
                break  # one language's error says what is wrong with the spec
    return problems


def check_translation(cfg) -> list[str]:
    if not (cfg.ssl.enabled and cfg.ssl.use_backtranslation and cfg.translation.model):
        return []
    from conlst_ray.models.translation import TranslationConfigError, check_coverage

    try:
        from conlst_ray.ray_jobs.translate import resolve_family

        check_coverage(resolve_family(cfg.translation), cfg.data.target_langs, cfg.translation.on_uncovered,
                       log=lambda *_: None)
    except TranslationConfigError as exc:
        return [f"translation.model: {exc}"]
    return []


def check_output(cfg) -> list[str]:
    if "://" in cfg.output_dir:
        return []
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".preflight-"):
            pass
    except OSError as exc:
        return [f"output_dir: {out} is not writable ({exc.strerror or exc})"]
    return []


def preflight(cfg) -> None:
    """Raise one UserError listing every problem found, or return."""
    problems = check_output(cfg)
    problems += check_model("model.name_or_path", cfg.model.name_or_path)
    if cfg.model.tokenizer and not cfg.model.tokenizer.endswith(".txt"):
        problems += check_model("model.tokenizer", cfg.model.tokenizer)
    elif cfg.model.tokenizer and not Path(cfg.model.tokenizer).is_file():
        problems.append(f"model.tokenizer: vocabulary file {cfg.model.tokenizer} not found")
    problems += check_model("model.source_checkpoint", cfg.model.source_checkpoint, need_weights=True)
    problems += check_checkpoint_labels(cfg)
    problems += check_corpora(cfg)
    problems += check_translation(cfg)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
