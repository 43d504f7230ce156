"""Does each stage give a real model a better target-language model? -> docs/REAL_GAIN.md

multilingual-e5-small (4-bit weights, dequantised) on real XNLI, sized for
one GPU and about 8 minutes: one source model (24,511 English MultiNLI
pairs, kept at its best epoch on English XNLI dev), one set of
pseudo-labels, then every row trained from them in this process (the stage
objects in the one step loop, experiments/gain_harness.py) and scored on
XNLI dev of English and six target languages. The rows, in the order they
run (a row left when --budget-s is spent is marked as not run):

- zero-shot; CoNL with learning rate 0 (must reproduce zero-shot exactly);
  CoNL with the paper's settings;
- self-training from the source model (class quantile); CoNLST (the paper's
  CoNL, then self-training); self-training whose selected rows carry their
  gold labels (the ceiling of the stage);
- CoNL probes, one change each: L_CL only, L_CLCS only, the head frozen,
  SGD instead of AdamW, gamma per (language, class);
- FlexMatch self-training from the source model.

Per row: per-language accuracy and its change against the model it started
from; the relative weight change of encoder and heads; the mean of every
loss term; the selected share and its pseudo-label accuracy; the label-free
signals (source dev accuracy, mean confidence and agreement with the start
model on the target rows) and whether the label-free rule
(reporting/selection.py) picks the truly best stage of the row's chain.

    python -m experiments.real_gain                       # the GPU study (~8 min on one H100)
    python -m experiments.real_gain --seeds 0 1 2 --rows "CoNL (paper" # chosen rows, three seeds
    python -m experiments.real_gain --tiny --out /tmp/g --docs /tmp/g  # a tiny BERT on a few hundred
                                                          # real rows, CPU, about a minute (tests run it)

Extra ``key=value`` arguments change the study's config for every row.
Finished rows are kept under --out (a rerun continues).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conlst_ray.algorithm.conl import CoNL
from conlst_ray.algorithm.self_training import SelfTraining
from conlst_ray.config import load_config, with_values
from experiments.gain_variants import ClcsOnlyCoNL, OracleSelfTraining, PaperStepsCoNL, ZeroRateCoNL

REPO = Path(__file__).resolve().parents[1]


CONFIG = REPO / "tune_configs" / "xnli_e5_small.yaml"
DATA = REPO.parent / "shared" / "data"
TEST_A = f"xnli_tsv:{DATA}/xnli_test_a/test-{{lang}}.tsv"   # scored rows: never trained on, never unlabelled text
STUDY = [f"data.source_train=xnli_mt_tsv:{DATA}/mnli_25k/multinli.train.{{lang}}.tsv",
         "data.target_langs=[ar,de,fr,sw,ur,zh]", "data.eval_during_training=true",
         f"data.target_test={TEST_A}", "data.target_dev=null",
         "source.epochs=3", "ssl.iterations=2",
         # the rows' baseline is the paper's method, whatever the config's defaults have become since
         "conl.gamma_quantile=null", "conl.gamma_groups=language", "ssl.thresholding=class_quantile",
         "ssl.threshold_quantile=0.5", "ssl.use_masking=true", "ssl.use_mixup=true"]
# 2 cores: bf16 autocast, the lower 8 layers frozen and their states computed once per row, length
# buckets; 835 scored test rows per language, 500 unlabelled rows per language (--target-rows)
CPU = ["resources.use_gpu=false", "resources.precision=bf16", "model.freeze_embeddings=true",
       "model.freeze_layers=8", "model.cache_frozen=true", "resources.length_buckets=true",
       "data.max_rows=835", "data.max_source_rows=24511", "source.epochs=2", "source.lr=1e-4",
       "source.eval_batch_size=128",
       # English dev rows 500-1334 judge the stages: rows 0-499 are the originals of the unlabelled rows
       "data.source_dev_skip_rows=500"]
TINY = ["model.name_or_path=tiny-bert", f"model.tokenizer={DATA}/vocab/bert-base-multilingual-cased-vocab.txt",
        "data.target_langs=[de,sw]", "data.max_rows=48", "data.max_source_rows=1500", "source.epochs=3",
        "source.lr=1e-3", "conl.batch_size=16", "conl.source_batch_size=16", "ssl.batch_size=8",
        "ssl.iterations=1", "resources.use_gpu=false", "resources.precision=fp32", "source.eval_batch_size=64"]
ZS = "zero-shot"
CONL_PAPER = "CoNL, paper settings"
CONLST_PAPER = "CoNLST (paper CoNL, then class-quantile self-training)"
CLEAN = {"ssl.use_masking": False, "ssl.use_mixup": False}
BALANCED = {**CLEAN, "ssl.thresholding": "lang_class_top"}
GAMMA_CLASS = {"conl.gamma_quantile": 0.7, "conl.gamma_groups": "class"}
CONL_GAMMA_CLASS = "CoNL, gamma per language and class (top 30 %)"
CONL_HEAD_FIRST = "CoNL, contrastive head fitted first (300 steps, encoder frozen)"
CONLST_BALANCED = "CoNLST (paper CoNL, then clean self-training with equal counts per (language, class))"
ST_BALANCED = "self-training, clean rows, equal counts per (language, class)"
CONLST_DEFAULT = ("CoNLST (CoNL with gamma per (language, class), then clean self-training with equal counts per "
                  "(language, class))")
ZS_PRIOR = "zero-shot + prior (source prior)"
ST_FROM_PRIOR = "self-training from prior-corrected pseudo-labels (ssl.prior=source)"
CONL_UNCACHED = "CoNL, gamma per (language, class), uncached: dropout in all 12 layers"


@dataclass
class Row:
    name: str
    stage: str             # conl | ssl
    start: str             # the row whose model it starts from
    cls: type
    overrides: dict = field(default_factory=dict)


# in the order they run: what answers "does the default help" first (a row left when --budget-s is spent is not run)
ROWS = [
    Row("CoNL, learning rate 0 (sanity)", "conl", ZS, ZeroRateCoNL),
    Row(CONL_PAPER, "conl", ZS, CoNL),
    Row("self-training, class quantile (no CoNL)", "ssl", ZS, SelfTraining, {"ssl.thresholding": "class_quantile"}),
    Row(CONLST_PAPER, "ssl", CONL_PAPER, SelfTraining, {"ssl.thresholding": "class_quantile"}),
    Row("self-training, clean rows (no masking, no mixup)", "ssl", ZS, SelfTraining,
        {**CLEAN, "ssl.thresholding": "class_quantile"}),
    Row(ST_BALANCED, "ssl", ZS, SelfTraining, BALANCED),
    Row("CoNL, lambda_CLCS = 1", "conl", ZS, CoNL, {"conl.lambda_clcs": 1.0}),
    Row("CoNL, the paper's steps per language (1/6 of joint)", "conl", ZS, PaperStepsCoNL),
    Row(CONL_GAMMA_CLASS, "conl", ZS, CoNL, GAMMA_CLASS),
    Row(CONLST_DEFAULT, "ssl", CONL_GAMMA_CLASS, SelfTraining, BALANCED),
    Row(CONLST_BALANCED, "ssl", CONL_PAPER, SelfTraining, BALANCED),
    Row(CONL_HEAD_FIRST, "conl", ZS, CoNL, {"conl.head_warmup_steps": 300}),
    Row("CoNLST (CoNL with its head fitted first, then clean self-training with equal counts per (language, class))",
        "ssl", CONL_HEAD_FIRST, SelfTraining, BALANCED),
    Row("CoNL, SGD (momentum 0.9, lr 1e-2)", "conl", ZS, CoNL, {"conl.optimizer": "sgd", "conl.lr": 1e-2}),
    Row("self-training, clean, per (language, class), 3 iterations x 2 epochs", "ssl", ZS, SelfTraining,
        {**BALANCED, "ssl.iterations": 3, "ssl.epochs_per_iteration": 2}),
    Row("self-training, masking and mixup, equal counts per (language, class)", "ssl", ZS, SelfTraining,
        {"ssl.thresholding": "lang_class_top"}),
    Row("self-training oracle: selected rows carry gold labels", "ssl", ZS, OracleSelfTraining,
        {"ssl.thresholding": "class_quantile"}),
    Row("self-training, masking only (no mixup)", "ssl", ZS, SelfTraining,
        {"ssl.use_mixup": False, "ssl.thresholding": "class_quantile"}),
    Row("CoNL, L_CL only", "conl", ZS, CoNL, {"conl.use_clcs": False}),
    Row("CoNL, L_CLCS only", "conl", ZS, ClcsOnlyCoNL),
    Row("CoNL, classification head frozen", "conl", ZS, CoNL, {"conl.train_classifier": False}),
    Row("self-training, FlexMatch (no CoNL)", "ssl", ZS, SelfTraining,
        {"ssl.thresholding": "flexmatch", "ssl.threshold_quantile": 0.7}),
    # the free baseline and what the method adds over it (issue 42): a "prior" row trains nothing, it
    # corrects its start row's outputs per language (reporting/prior.py, selection.prior)
    Row(ZS_PRIOR, "prior", ZS, None, {"selection.prior": "source"}),
    Row("zero-shot + prior (EM)", "prior", ZS, None, {"selection.prior": "em"}),
    Row("self-training + prior (source prior)", "prior", ST_BALANCED, None, {"selection.prior": "source"}),
    Row("self-training, source term only (ssl.lambda_u=0)", "ssl", ZS, SelfTraining, {**BALANCED, "ssl.lambda_u": 0.0}),
    Row(ST_FROM_PRIOR, "ssl", ZS, SelfTraining, {**BALANCED, "ssl.prior": "source"}),
    Row("self-training from prior-corrected pseudo-labels, then + prior", "prior", ST_FROM_PRIOR, None,
        {"selection.prior": "source"}),
    Row("self-training, counts per the EM prior (ssl.prior=em)", "ssl", ZS, SelfTraining,
        {**BALANCED, "ssl.prior": "em"}),
    Row("CoNLST + prior (source prior)", "prior", CONLST_DEFAULT, None, {"selection.prior": "source"}),
    # the dropout question (issue 43): CoNL's two views differ only by the upper layers' dropout under the cache
    Row(CONL_UNCACHED, "conl", ZS, CoNL, {**GAMMA_CLASS, "model.cache_frozen": False}),
    Row("CoNLST from the uncached CoNL", "ssl", CONL_UNCACHED, SelfTraining, BALANCED),
]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def chain_of(name: str) -> list[str]:
    """The rows from zero-shot to ``name`` (each row's start, recursively)."""
    by_name = {r.name: r for r in ROWS}
    out = [name]
    while out[0] != ZS:
        out.insert(0, by_name[out[0]].start)
    return out


def run_seed(cfg, rows: list[Row], out: Path, budget_s: float, t_start: float, results: dict,
             on_row=lambda: None, log=print, target_rows: int | None = None,
             source_seed: int | None = None, given_source: str | None = None) -> dict:
    """Every row of one seed into ``results`` (finished rows read back from
    ``out``); ``on_row`` after each row, so that a run cut short has written
    what it measured. ``source_seed``: start from that seed's source model
    (the seeds then vary the stages' own draws, not the source model).
    ``given_source``: a source model trained elsewhere (a run's
    ``source/model``), used instead of training one."""
    import numpy as np

    from conlst_ray.reporting.selection import StageSignals
    from experiments import gain_harness as h

    source_cfg = cfg if source_seed is None else with_values(cfg, {"seed": source_seed})
    shared = h.prepare(source_cfg, out, target_rows)
    seed_dir = out / f"seed{cfg.seed}"
    shared.cfg = source_cfg
    source_dir, curve = h.train_source(shared, out, log, given_source)
    shared.cfg = cfg
    model_dirs = {ZS: source_dir}

    def measure(name: str, model, start: str | None, info: dict, prior: str | None = None) -> dict:
        q = h.target_predictions(shared, model)
        bias = h.prior_bias(shared, q, prior) if prior else None
        if bias:
            q = h.correct_by_language(q, shared.target.langs, bias)
        shared.predictions[name] = q.argmax(-1)
        scores = h.score(shared, model, bias)
        agree = float((q.argmax(-1) == shared.predictions[start]).mean()) if start else None
        signals = StageSignals(name, h.source_dev(shared, model), float(q.max(-1).mean()), agree,
                               start if prior else None)
        extra = {"bias": {k: list(v) for k, v in bias.items()}} if bias else {}
        return {**info, **extra, "scores": scores, "signals": signals.__dict__}

    zs_model = h.load(source_dir, cfg, "source", shared.device)
    shared.q_source = h.target_predictions(shared, zs_model)
    results[ZS] = measure(ZS, zs_model, None, {"source_curve": curve})
    del zs_model
    on_row()
    for row in rows:
        row_file = seed_dir / "rows" / f"{slug(row.name)}.json"
        keep = any(r.start == row.name for r in rows)  # a later row starts from this one
        model_kept = (seed_dir / "models" / slug(row.name)).is_dir()
        if row_file.is_file() and (row.start == ZS or row.start in model_dirs) and (model_kept or not keep):
            results[row.name] = json.loads(row_file.read_text())
            shared.predictions[row.name] = np.asarray(results[row.name].pop("_predictions"))
            if (seed_dir / "models" / slug(row.name)).is_dir():
                model_dirs[row.name] = seed_dir / "models" / slug(row.name)
            continue
        if row.start not in model_dirs:
            log(f"[study] {row.name}: skipped, its start row {row.start!r} did not run")
            continue
        if time.time() - t_start > budget_s:
            log(f"[study] {row.name}: not run, --budget-s {budget_s:g} spent")
            continue
        if row.stage == "prior":  # trains nothing: its start's model, corrected per language
            model = h.load(model_dirs[row.start], cfg, "source", shared.device)
            results[row.name] = measure(row.name, model, row.start, {"stage": "prior", "start": row.start,
                                                                      "overrides": row.overrides},
                                        row.overrides["selection.prior"])
            del model
            row_file.parent.mkdir(parents=True, exist_ok=True)
            row_file.write_text(json.dumps({**results[row.name],
                                            "_predictions": shared.predictions[row.name].tolist()}, default=float))
            on_row()
            continue
        save_to = seed_dir / "models" / slug(row.name) if keep else None
        model, info = h.train_row(shared, row.stage, row.cls, model_dirs[row.start], row.overrides,
                                  seed_dir / "rows" / f"{slug(row.name)}.steps.jsonl", save_to)
        if save_to is not None:
            model_dirs[row.name] = save_to
        results[row.name] = measure(row.name, model, row.start, {"stage": row.stage, "start": row.start,
                                                                  "overrides": row.overrides, **info})
        del model
        row_file.parent.mkdir(parents=True, exist_ok=True)
        row_file.write_text(json.dumps({**results[row.name], "_predictions": shared.predictions[row.name].tolist()},
                                       default=float))
        on_row()
        log(f"[study] {row.name}: {info['seconds']:.0f} s, target avg "
            f"{mean_target(results[row.name]['scores'], cfg):.1f} "
            f"(zero-shot {mean_target(results[ZS]['scores'], cfg):.1f})")
    on_row()  # rows read back from disk too
    return results


def mean_target(scores: dict, cfg) -> float:
    """The average over the target languages' test accuracies."""
    vals = [scores[lang] for lang in cfg.data.target_langs if lang in scores]
    return sum(vals) / len(vals) if vals else float("nan")


def study_config(args):
    overrides = STUDY + (CPU if args.cpu else []) + (TINY if args.tiny else []) + list(args.overrides)
    return load_config(CONFIG, overrides)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--tiny", action="store_true", help="a tiny BERT on a few hundred rows (CPU, the test)")
    parser.add_argument("--cpu", action="store_true",
                        help="sized for 2 CPU cores: bf16, lower 8 layers frozen and cached, 835 test rows and "
                             "--target-rows unlabelled rows per language")
    parser.add_argument("--target-rows", type=int, default=None,
                        help="unlabelled target rows per language (default data.max_rows; --cpu: 500)")
    parser.add_argument("--share-source", action="store_true",
                        help="every seed starts from the source model of the first seed listed (the seeds then vary "
                             "CoNL's and self-training's draws)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--source-models", nargs="+", default=None, metavar="DIR",
                        help="one source model per seed (e.g. the source/model of a run of the CPU config with that "
                             "seed), used instead of training one: independent source models without paying twice")
    parser.add_argument("--rows", nargs="+", help="run only the rows whose names start with these (and their starts)")
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="start no row after this many seconds (a row takes up to ~50 s on one H100)")
    parser.add_argument("--out", default=str(REPO / "runs" / "real_gain"))
    parser.add_argument("--docs", default=str(REPO / "docs"))
    args = parser.parse_args(argv)
    from experiments.gain_report import write_report

    cfg = study_config(args)
    rows = ROWS
    if args.rows:
        wanted = {n for r in ROWS if any(r.name.startswith(p) for p in args.rows) for n in chain_of(r.name)}
        rows = [r for r in ROWS if r.name in wanted]
    t0, by_seed = time.time(), {}
    command = sys.argv[1:] if argv is None else argv

    def report():
        write_report(cfg, by_seed, [ZS] + [r.name for r in rows], chain_of, Path(args.docs), command, time.time() - t0)

    target_rows = args.target_rows or (500 if args.cpu else None)
    if args.source_models and len(args.source_models) != len(args.seeds):
        parser.error(f"--source-models: {len(args.source_models)} given for {len(args.seeds)} seeds")
    for i, seed in enumerate(args.seeds):
        by_seed[seed] = {}
        run_seed(with_values(cfg, {"seed": seed}), rows, Path(args.out), args.budget_s, t0, by_seed[seed], report,
                 target_rows=target_rows, source_seed=args.seeds[0] if args.share_source else None,
                 given_source=args.source_models[i] if args.source_models else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
