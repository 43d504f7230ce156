"""Which stage model a run hands back, decided without target labels.

A user of zero-shot transfer has no labelled target data to tell whether
CoNL or self-training helped; measured on real XNLI they can lower target
accuracy (docs/REAL_GAIN.md). What a run does have, per candidate:

- its accuracy on the labelled *source* dev set (the one label-based
  signal that is allowed: no target label is read);
- on the unlabelled target rows, its mean confidence and the share of rows
  whose prediction agrees with the candidate before it.

The candidates are the stage models (zero-shot, CoNL, CoNLST or
self-training) and the prior-corrected ones (reporting/prior.py). The
``label_free`` rule judges each candidate against zero-shot *on its own*:
one that falls more than ``selection.source_dev_tolerance`` points of
source dev accuracy below zero-shot is refused, whatever came before it
(a CoNL that lost does not veto the self-training built on it). Of the
rest it hands back the best source dev accuracy; a prior-corrected model
ties its base there (the source language is not corrected) and wins the tie,
and then the later stage wins. Confidence and agreement are reported beside
the choice but not used: experiments/real_gain.py measures how often the
rule picks the truly best candidate of a chain (its hits and regret).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from conlst_ray.config.stages import STAGES
from conlst_ray.reporting.tables import write_table
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


SUFFIX = " + prior"   # a candidate's class-prior correction (reporting/prior.py) is named after it
TRAINED = {row: stage.name for stage in STAGES for row in stage.rows}  # table row -> stage (config/stages.py)
# CoNL is not corrected: a run corrects zero-shot and its final stage
STAGE_OF = {**TRAINED, **{name + SUFFIX: stage + SUFFIX for name, stage in TRAINED.items() if name != "CoNL"}}


@dataclass
class StageSignals:
    """What a run knows of one candidate model without target labels."""
    name: str
    source_dev_acc: Optional[float]        # percent, on data.source_dev
    target_confidence: Optional[float]     # mean max probability over the target rows
    agreement_with_previous: Optional[float]  # share of target rows predicted as the candidate before did
    corrected_from: Optional[str] = None   # a prior-corrected candidate: the model it corrects


def choose_stage(signals: list[StageSignals], rule: str, tolerance: float) -> tuple[int, str]:
    """The index of the candidate to hand back and why, ``signals`` in chain
    order (zero-shot first)."""
    index, reason, _ = judge(signals, rule, tolerance)
    return index, reason


def judge(signals: list[StageSignals], rule: str, tolerance: float) -> tuple[int, str, list[str]]:
    """``choose_stage`` with one line per candidate saying how it was judged."""
    trained = [i for i, s in enumerate(signals) if s.corrected_from is None]
    last = trained[-1]
    if rule == "last":
        return last, f"selection.rule=last: the final stage ({signals[last].name})", [
            "the final stage" if i == last else "not the final stage" for i in range(len(signals))]
    base = signals[0].source_dev_acc
    if base is None:
        reason = (f"no source dev set (data.source_dev) to judge the stages by: the final stage "
                  f"({signals[last].name})")
        return last, reason, ["no source dev accuracy"] * len(signals)
    lines, accepted = [], []
    for i, s in enumerate(signals):
        if i == 0:
            lines.append(f"the reference: source dev {base:.1f}")
            accepted.append(i)
        elif s.source_dev_acc is None:
            lines.append("no source dev accuracy: refused")
        elif s.source_dev_acc < base - tolerance:
            lines.append(f"source dev {s.source_dev_acc:.1f}, {base - s.source_dev_acc:.1f} below zero-shot: "
                         f"more than selection.source_dev_tolerance={tolerance:g}, refused")
        else:
            tie = f" (as {s.corrected_from}: the source language is not corrected)" if s.corrected_from else ""
            lines.append(f"source dev {s.source_dev_acc:.1f}{tie}, {s.source_dev_acc - base:+.1f} against "
                         f"zero-shot: accepted")
            accepted.append(i)
    best = max(accepted, key=lambda i: (round(signals[i].source_dev_acc, 6), signals[i].corrected_from is not None,
                                        i))
    lines[best] += "; the best accepted: handed back"
    refused = [signals[i].name for i in range(len(signals)) if i not in accepted]
    why = (f"{signals[best].name} has the best source dev accuracy ({signals[best].source_dev_acc:.1f}) of the "
           f"candidates within selection.source_dev_tolerance={tolerance:g} of zero-shot ({base:.1f})")
    if signals[best].corrected_from:
        why += f"; its class-prior correction ties {signals[best].corrected_from} there and is preferred"
    if refused:
        why += f"; refused: {', '.join(refused)}"
    return best, why, lines


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


def stage_signals(cfg: "Config", models: dict, dev_results: dict, predictions) -> list[StageSignals]:
    """Signals of every candidate in ``models`` (name -> directory, in chain order)."""
    out, previous = [], None
    for name, model in models.items():
        stage = STAGE_OF.get(name)  # a row a study names otherwise has no stage predictions to reuse
        table = predictions.of(stage, model) if predictions is not None and stage else None
        acc = dev_results.get(name, {}).get(cfg.data.source_lang)
        conf = float(np.mean(table.column("confidence").to_numpy())) if table is not None else None
        base = name.removesuffix(SUFFIX) if name.endswith(SUFFIX) else None
        out.append(StageSignals(name, 100 * acc if acc is not None else None, conf,
                                agreement(table, previous) if previous is not None else None, base))
        previous = table
    return out


def hand_back(cfg: "Config", run, models: dict, dev_results: dict, predictions, out) -> str:
    """Choose the stage model to hand back; write ``out/stage_selection.{md,csv}``
    and the run's record of the choice, point ``RUN/model`` at it (joint mode),
    and return the report's paragraph."""
    signals = stage_signals(cfg, models, dev_results, predictions)
    index, reason, lines = judge(signals, cfg.selection.rule, cfg.selection.source_dev_tolerance)
    chosen = signals[index].name
    fmt = lambda v, scale=1.0: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v * scale  # noqa: E731
    rows = [[s.name, fmt(s.source_dev_acc), fmt(s.target_confidence, 100), fmt(s.agreement_with_previous, 100),
             "yes" if s.name == chosen else "", line] for s, line in zip(signals, lines)]
    md = write_table(out / "stage_selection", ["candidate", "source dev acc (%)", "target mean confidence (%)",
                                               "target agreement with previous candidate (%)", "handed back",
                                               "why"], rows)
    model = models[chosen]
    atomic_write_text(run.handed_back_record, json.dumps(
        {"stage": chosen, "model": model, "rule": cfg.selection.rule, "reason": reason,
         "stored_at": storage.location(model) if isinstance(model, str) else None,
         "signals": [asdict(s) for s in signals], "why": dict(zip((s.name for s in signals), lines))}, indent=2))
    if isinstance(model, str):
        _point(run.handed_back, model)
    log.info(f"[report] handed back: {chosen} ({model}): {reason}")
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
