"""docs/REAL_GAIN.md from the study's rows (experiments/real_gain.py):
accuracy per language and per-stage deltas, what each stage did to the
weights and losses, the label-free signals and how often the label-free
rule picks the truly best stage of a chain. Hand-written findings, kept in
docs/real_gain_findings.md, are included as they are."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from conlst_ray.reporting.selection import StageSignals, choose_stage
from conlst_ray.reporting.tables import to_markdown
from conlst_ray.storage.files import atomic_write_text

LOSSES = ("loss_cl", "loss_clcs", "loss_nl_target", "loss_sup", "loss_u", "negatives_missing")


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def _target_avg(scores: dict, langs) -> float:
    return _mean([scores.get(lang) for lang in langs])


def _sd(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _mean_sd(values):
    """'m' for one seed, 'm ± sd' for several."""
    m, sd = _mean(values), _sd(values)
    if m is None:
        return ""
    return f"{m:.1f}" if sd is None else f"{m:.1f} ± {sd:.1f}"


def accuracy_rows(by_seed: dict, names: list, cfg) -> tuple[list, list]:
    """Per-language accuracy, mean (± sd over seeds where several ran the
    row), and the change of the target average and of English against the
    start row."""
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    header = ["row", "seeds"] + langs + ["avg", "avg vs start", "en vs start"]
    rows = []
    for name in names:
        runs = [res for res in by_seed.values() if name in res]
        if not runs:
            rows.append([name, 0] + [""] * (len(langs) + 3))
            continue
        per_lang = [_mean_sd([r[name]["scores"].get(lang) for r in runs]) for lang in langs]
        avg = _mean_sd([_target_avg(r[name]["scores"], cfg.data.target_langs) for r in runs])
        start = runs[0][name].get("start")
        d_avg = d_en = ""
        if start:
            d_avg = _mean([_target_avg(r[name]["scores"], cfg.data.target_langs)
                           - _target_avg(r[start]["scores"], cfg.data.target_langs) for r in runs])
            d_en = _mean([r[name]["scores"][langs[0]] - r[start]["scores"][langs[0]] for r in runs])
        rows.append([name, len(runs)] + per_lang + [avg, d_avg, d_en])
    return header, rows


FREE = "zero-shot + prior (source prior)"   # the free candidate every run offers beside zero-shot
ATTRIBUTION = ["zero-shot", FREE,
               "self-training, source term only (ssl.lambda_u=0)",
               "self-training, clean rows, equal counts per (language, class)",
               "self-training + prior (source prior)",
               "self-training from prior-corrected pseudo-labels (ssl.prior=source)",
               "self-training from prior-corrected pseudo-labels, then + prior",
               "CoNL, gamma per language and class (top 30 %)",
               "CoNLST (CoNL with gamma per (language, class), then clean self-training with equal counts per "
               "(language, class))",
               "CoNLST + prior (source prior)"]


def attribution_rows(by_seed: dict, cfg) -> tuple[list, list]:
    """What the gain is made of: each row's target average, and its
    difference against zero-shot and against the free baseline (the
    prior-corrected zero-shot), mean ± sd over the seeds that ran both."""
    langs = cfg.data.target_langs
    rows = []
    for name in ATTRIBUTION:
        runs = [r for r in by_seed.values() if name in r]
        if not runs:
            continue
        avg = [_target_avg(r[name]["scores"], langs) for r in runs]
        vs = [_mean_sd([_target_avg(r[name]["scores"], langs) - _target_avg(r[base]["scores"], langs)
                        for r in runs if base in r]) for base in ("zero-shot", FREE)]
        en = _mean_sd([r[name]["scores"].get(cfg.data.source_lang) for r in runs])
        rows.append([name, len(runs), _mean_sd(avg), *vs, en])
    return ["row", "seeds", "target avg", "vs zero-shot", "vs zero-shot + prior (free)", "English"], rows


def recall_rows(by_seed: dict, names: list, cfg) -> tuple[list, list]:
    """Recall (%) per gold class over the target languages' test rows, mean over seeds."""
    labels = list(cfg.data.task.labels)
    rows = []
    for name in names:
        runs = [res for res in by_seed.values() if name in res]
        if runs and f"recall_{labels[0]}" in runs[0][name]["scores"]:
            rows.append([name] + [_mean([r[name]["scores"].get(f"recall_{lb}") for r in runs]) for lb in labels])
    return ["row"] + labels, rows


def mechanism_rows(by_seed: dict, names: list) -> tuple[list, list]:
    """What each trained row did (first seed that ran it)."""
    header = ["row", "steps", "seconds", "encoder change", "head change", "contrastive head change",
              "encoder step/weight", *LOSSES, "selected share", "selected acc", "all-rows acc", "trained-label acc"]
    rows = []
    for name in names:
        res = next((r[name] for r in by_seed.values() if name in r and "epochs" in r[name]), None)
        if res is None:
            continue
        epochs = res["epochs"]
        def fmt(key, epochs=epochs):
            return " / ".join(f"{100 * e[key]:.0f}" for e in epochs if e.get(key) is not None)
        rows.append([name, res["steps"], res["seconds"], f"{res['change_encoder']:.2e}",
                     f"{res['change_classifier']:.2e}", f"{res['change_contrastive_head']:.2e}",
                     f"{res['encoder_step_per_weight']:.2e}"]
                    + [_fmt3(_mean([e.get(k) for e in epochs])) for k in LOSSES]
                    + [fmt("selected_share"), fmt("selected_pseudo_label_acc"), fmt("all_pseudo_label_acc"),
                       fmt("trained_label_acc")])
    return header, rows


def _fmt3(v):
    return "" if v is None else f"{v:.4f}"


def candidates(chain: list, res: dict) -> list:
    """A row's chain as a run offers it: the prior-corrected zero-shot (free,
    in every run) right after zero-shot, where the study measured it."""
    if FREE in res and FREE not in chain:
        return chain[:1] + [FREE] + chain[1:]
    return chain


def rule_rows(by_seed: dict, names: list, chain_of, cfg) -> tuple[list, list, tuple[int, int, float]]:
    """For each seed and row: its candidates zero-shot -> ... -> row, the
    one the label-free rule hands back and the truly best one (target test
    average, read here only to grade the rule), and the points lost."""
    header = ["seed", "candidates", "source dev (%)", "target confidence (%)", "agreement with previous (%)",
              "rule hands back", "truly best", "hit", "points lost"]
    rows, hits, total, regret = [], 0, 0, 0.0
    offered = [0, 0, 0.0]   # the chains as a run offers them (see below): hits, chains, points lost
    for seed, res in by_seed.items():
        for name in names[1:]:
            chain = candidates(chain_of(name), res)
            # another correction of zero-shot (EM) is an alternative to the free candidate, not beside it:
            # a run offers one correction per model (selection.prior); docs/PRIOR.md compares them
            other_free = res.get(name, {}).get("stage") == "prior" and res[name].get("start") == "zero-shot"
            if other_free or not all(n in res for n in chain):
                continue
            signals = [StageSignals(**res[n]["signals"]) for n in chain]
            pick, _ = choose_stage(signals, "label_free", cfg.selection.source_dev_tolerance)
            avgs = [_target_avg(res[n]["scores"], cfg.data.target_langs) for n in chain]
            best = max(range(len(chain)), key=lambda i: avgs[i])
            hit = avgs[pick] == avgs[best]
            hits, total, regret = hits + hit, total + 1, regret + avgs[best] - avgs[pick]
            # a run corrects its final trained stage too: a chain ending in an uncorrected self-training or
            # CoNLST row lacks a candidate a run would have; chains ending in a correction or in CoNL do not
            if res[name].get("stage") in ("prior", "conl"):
                offered = [offered[0] + hit, offered[1] + 1, offered[2] + avgs[best] - avgs[pick]]
            rows.append([seed, " -> ".join(chain), " / ".join(f"{s.source_dev_acc:.1f}" for s in signals),
                         " / ".join(f"{100 * s.target_confidence:.1f}" for s in signals),
                         " / ".join(_agreement(s) for s in signals), chain[pick], chain[best],
                         "yes" if hit else "no", f"{avgs[best] - avgs[pick]:.2f}"])
    return header, rows, (hits, total, regret, *offered)


def sanity_line(by_seed: dict, names: list) -> str:
    name = next((n for n in names if "learning rate 0" in n), None)
    runs = [r for r in by_seed.values() if name in r]
    if not runs:
        return ""
    same = all(r[name]["scores"] == r["zero-shot"]["scores"] for r in runs)
    zero = all(r[name]["change_encoder"] == 0 and r[name]["change_classifier"] == 0 for r in runs)
    return (f"Sanity row ({name}): scores {'identical to' if same else 'DIFFERENT FROM'} zero-shot in every "
            f"language, to the last digit; weight change {'exactly 0' if zero else 'NOT 0'}.\n")


def write_report(cfg, by_seed: dict, names: list, chain_of, docs: Path, argv: list, seconds: float) -> Path:
    import torch

    docs.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86'})"
    curves = "\n".join(f"- seed {seed}: " + ", ".join(f"epoch {c['epoch']}: {c['source_dev_acc']:.1f}"
                                                     for c in res["zero-shot"]["source_curve"])
                       for seed, res in by_seed.items())
    hdr, rows, (hits, total, regret, o_hits, o_total, o_regret) = rule_rows(by_seed, names, chain_of, cfg)
    findings = docs / "real_gain_findings.md"
    text = [
        "# Does each stage improve a real model?\n",
        f"Made by `python -m experiments.real_gain {' '.join(argv)}` on {device}, {seconds:.0f} s. "
        f"Model `{cfg.model.name_or_path}` (frozen lower layers: {cfg.model.freeze_layers}, precision "
        f"{cfg.resources.precision}); source `{cfg.data.source_train}` "
        f"(cap {cfg.data.max_source_rows or 'none'}); targets {', '.join(cfg.data.target_langs)} "
        f"(unlabelled text = `{cfg.data.target_train}`); scores on `{cfg.data.target_test}` (English "
        f"included; rows never trained on, at most {cfg.data.max_rows or 'all'} per language); the source "
        f"model's kept epoch and the label-free signal on `{cfg.data.source_dev}`. Every row of a seed starts "
        "from one source model and one set of pseudo-labels. XNLI is CC BY-NC 4.0 (research use).\n",
        "## What the gain is made of (target average on the test rows; differences per seed, then mean ± sd)\n",
        to_markdown(*attribution_rows(by_seed, cfg)),
        f"Source model, English dev accuracy per epoch (the best epoch is kept):\n\n{curves}\n",
        sanity_line(by_seed, names),
        "## Accuracy (%) on the test rows, mean ± sd over seeds\n",
        to_markdown(*accuracy_rows(by_seed, names, cfg)),
        "## Recall (%) per gold class, target languages\n",
        to_markdown(*recall_rows(by_seed, names, cfg)),
        "## What each stage did (first seed)\n",
        "Weight change = ||theta_after - theta_before|| / ||theta_before|| per part; encoder step/weight = mean "
        "|change| of an encoder weight per optimizer step; loss terms are means over the stage's steps; shares "
        "and accuracies (%) are per self-training iteration.\n",
        to_markdown(*mechanism_rows(by_seed, names)),
        "## Label-free signals and the hand-back rule\n",
        f"The label-free rule (selection.rule=label_free, tolerance {cfg.selection.source_dev_tolerance:g} "
        f"points of source dev accuracy, each candidate judged against zero-shot on its own) handed back the "
        f"truly best candidate in **{hits} of {total}** chains and lost **{regret:.2f}** points of target "
        f"average in all (the sum over the chains of the best candidate's average minus the one handed back's). "
        f"Over the {o_total} chains whose candidates are what a run offers (a run also corrects its final trained "
        f"stage, so a chain ending in an uncorrected self-training row lacks one of them): **{o_hits} of "
        f"{o_total}**, **{o_regret:.2f}** points lost.\n",
        to_markdown(hdr, rows),
    ]
    if findings.is_file():
        text.append(findings.read_text())
    out = docs / "REAL_GAIN.md"
    atomic_write_text(out, "\n".join(text))
    atomic_write_text(docs / "real_gain.json", json.dumps({str(s): r for s, r in by_seed.items()}, indent=1,
                                                           default=float))
    return out


def _agreement(signals) -> str:
    a = signals.agreement_with_previous
    return "" if a is None else f"{100 * a:.1f}"
