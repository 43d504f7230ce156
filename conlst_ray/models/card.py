"""The model card (README.md) saved beside a stage model's weights: what
the model is, what it was trained on, what it scored, how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conlst_ray.config.stages import STAGES

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


STAGE_NAMES = {**{s.name: s.title for s in STAGES if s.kind == "train"}, "init": "initial (not trained)"}


def stage_card(cfg: "Config", stage: str, metrics: dict) -> dict:
    """What the card says of a model trained by ``stage`` under ``cfg``;
    ``metrics``: the stage's last epoch record (dev accuracies as fractions)."""
    d = cfg.data
    accs = {k[4:]: v for k, v in metrics.items() if k.startswith("acc_") and isinstance(v, float)}
    return {"base_model": cfg.model.name_or_path, "stage": stage, "task": d.task.kind,
            "labels": list(d.task.labels), "source_lang": d.source_lang, "target_langs": list(d.target_langs),
            "source_train": d.source_train, "target_train": d.target_train,
            "dev_accuracy": {lang: round(100 * acc, 2) for lang, acc in accs.items()},
            "epoch": metrics.get("epoch"), "kept_epoch": metrics.get("kept_epoch")}


def write_card(path: Path, card: dict) -> None:
    labels = ", ".join(f"{i} = {name}" for i, name in enumerate(card["labels"]))
    accs = card.get("dev_accuracy") or {}
    table = ""
    if accs:
        table = ("\n| language | " + " | ".join(accs) + " |\n|---|" + "---|" * len(accs) + "\n| dev accuracy (%) | "
                 + " | ".join(f"{v:.1f}" for v in accs.values()) + " |\n")
    inputs = "a text pair (premise, hypothesis)" if card["task"] == "pair" else "one text"
    text = f"""---
library_name: transformers
pipeline_tag: text-classification
base_model: {card['base_model']}
tags: [conlst_ray, cross-lingual-transfer, zero-shot-cross-lingual]
---

# {card['base_model']}, after {STAGE_NAMES.get(card['stage'], card['stage'])}

Trained by conlst_ray (CoNLST: contrastive negative learning and
self-training for zero-shot cross-lingual transfer).

- **Input:** {inputs}; **labels:** {labels}
- **Labelled data ({card['source_lang']}):** `{card['source_train']}`
- **Unlabelled target text ({', '.join(card['target_langs'])}):** `{card['target_train']}` (labels never trained on)
- **Stage:** {STAGE_NAMES.get(card['stage'], card['stage'])}{_epoch(card)}
{table}
Accuracies are on the run's dev sets after this stage's last epoch; the
run's `results/` hold the per-language tables of every stage and say which
stage the run handed back.

## Load

```python
import conlst_ray.hf  # registers this architecture with transformers' Auto classes
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)
tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
```

Without conlst_ray installed: `from_pretrained(MODEL_DIR, trust_remote_code=True)`
runs `modeling_conlst.py` from this folder. Or label a corpus:
`python -m conlst_ray.predict MODEL_DIR --corpus SPEC --out FILE`.
"""
    (Path(path) / "README.md").write_text(text, encoding="utf-8")


def _epoch(card: dict) -> str:
    if card.get("kept_epoch") is not None:
        return f" (epoch {card['kept_epoch']}, the best on source dev)"
    return f" ({card['epoch'] + 1} epochs)" if card.get("epoch") is not None else ""
