"""Which stage model a run hands back, decided without target labels.

A user of zero-shot transfer has no labelled target data to tell whether
CoNL or self-training helped; measured on real XNLI they can lower target
accuracy (docs/REAL_GAIN.md). What a run does have, per stage model:

- its accuracy on the labelled *source* dev set (the one label-based
  signal that is allowed: no target label is read);
- on the unlabelled target rows, its mean confidence and the share of rows
  whose prediction agrees with the stage before it.

The ``label_free`` rule walks the chain zero-shot -> CoNL -> self-training
and stops before the first stage whose source dev accuracy falls more than
``selection.source_dev_tolerance`` points below the zero-shot model's; a
stage trained from a refused model is refused with it. Confidence and
agreement are reported beside the choice (they say how far a stage moved)
but not used by the rule: whether any of the three tracks target accuracy
on a real model is what experiments/real_gain.py measures (the rule's hit
rate over its chains).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from conlst_ray.reporting.tables import write_table
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

STAGE_OF = {"zero-shot": "source", "CoNL": "conl", "CoNLST": "ssl", "self-training": "ssl"}


@dataclass
class StageSignals:
    """What a run knows of one stage model without target labels."""
    name: str
    source_dev_acc: Optional[float]        # percent, on data.source_dev
    target_confidence: Optional[float]     # mean max probability over the target rows
    agreement_with_previous: Optional[float]  # share of target rows predicted as the stage before did


def choose_stage(signals: list[StageSignals], rule: str, tolerance: float) -> tuple[int, str]:
    """The index of the stage to hand back and why, ``signals`` in chain
    order (zero-shot first)."""
    last = len(signals) - 1
    if rule == "last":
        return last, f"selection.rule=last: the final stage ({signals[last].name})"
    base = signals[0].source_dev_acc
    if base is None:
        return last, (f"no source dev set (data.source_dev) to judge the stages by: the final stage "
                      f"({signals[last].name})")
    chosen = 0
    for i, s in enumerate(signals[1:], start=1):
        if s.source_dev_acc is None or s.source_dev_acc < base - tolerance:
            lost = "no score" if s.source_dev_acc is None else f"{base - s.source_dev_acc:.1f} points"
            later = f"; {', '.join(t.name for t in signals[i + 1:])} built on it" if i < last else ""
            return chosen, (f"{s.name} lost {lost} of source dev accuracy against zero-shot "
                            f"({base:.1f}), more than selection.source_dev_tolerance={tolerance:g}{later}: "
                            f"handing back {signals[chosen].name}")
        chosen = i
    return chosen, (f"no stage lost more than {tolerance:g} points of source dev accuracy against zero-shot "
                    f"({base:.1f}): the final stage ({signals[chosen].name})")


def agreement(a, b) -> Optional[float]:
    """Share of rows (matched by id) on which two prediction tables agree."""
    import pyarrow.compute as pc

    if a is None or b is None:
        return None
    pos = pc.index_in(a.column("id"), value_set=b.column("id").combine_chunks()).fill_null(-1).to_numpy(
        zero_copy_only=False)
    found = pos >= 0
    if not found.any():
        return None
    mine = a.column("pseudo_label").to_numpy()[found]
    theirs = b.column("pseudo_label").to_numpy()[pos[found]]
    return float((mine == theirs).mean())


def stage_signals(cfg, models: dict, dev_results: dict, predictions) -> list[StageSignals]:
    """Signals of every stage model in ``models`` (name -> directory, in chain order)."""
    out, previous = [], None
    for name, model in models.items():
        stage = STAGE_OF.get(name)  # a row a study names otherwise has no stage predictions to reuse
        table = predictions.of(stage, model) if predictions is not None and stage else None
        acc = dev_results.get(name, {}).get(cfg.data.source_lang)
        conf = float(np.mean(table.column("confidence").to_numpy())) if table is not None else None
        out.append(StageSignals(name, 100 * acc if acc is not None else None, conf,
                                agreement(table, previous) if previous is not None else None))
        previous = table
    return out


def hand_back(cfg, run, models: dict, dev_results: dict, predictions, out, log=print) -> str:
    """Choose the stage model to hand back; write ``out/stage_selection.{md,csv}``
    and the run's record of the choice, point ``RUN/model`` at it (joint mode),
    and return the report's paragraph."""
    signals = stage_signals(cfg, models, dev_results, predictions)
    index, reason = choose_stage(signals, cfg.selection.rule, cfg.selection.source_dev_tolerance)
    chosen = signals[index].name
    fmt = lambda v, scale=1.0: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v * scale  # noqa: E731
    rows = [[s.name, fmt(s.source_dev_acc), fmt(s.target_confidence, 100), fmt(s.agreement_with_previous, 100),
             "yes" if s.name == chosen else ""] for s in signals]
    md = write_table(out / "stage_selection", ["stage", "source dev acc (%)", "target mean confidence (%)",
                                               "target agreement with previous stage (%)", "handed back"], rows)
    model = models[chosen]
    atomic_write_text(run.handed_back_record, json.dumps(
        {"stage": chosen, "model": model, "rule": cfg.selection.rule, "reason": reason,
         "stored_at": storage.location(model) if isinstance(model, str) else None,
         "signals": [asdict(s) for s in signals]}, indent=2))
    if isinstance(model, str):
        _point(run.handed_back, model)
    log(f"[report] handed back: {chosen} ({model}): {reason}")
    where = f"`{run.handed_back}` -> `{model}`" if isinstance(model, str) else json.dumps(model)
    if storage.is_remote(run.root) and isinstance(model, str):
        where = f"`{storage.location(model)}`"  # the symlink exists on this machine only
    return f"Handed back ({cfg.selection.rule} rule): **{chosen}**, {where}. {reason}.\n\n{md}"


def _point(link, target: str) -> None:
    """``link`` -> ``target`` as a relative symlink, replaced atomically."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)
