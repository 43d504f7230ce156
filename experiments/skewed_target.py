"""A target corpus whose classes are not balanced: does the run still hand
back a model no worse than zero-shot, and how close is its prior estimate?
-> docs/PRIOR.md

XNLI dev and xnli_test_a, subsampled per language to the given class
shares (labels read only to subsample and to score), written as XNLI TSV
files; then the CPU config runs on them from a given source model (no
source training), once per ``selection.prior``. The English rows of the
skewed dev set are part of the corpus files (read by selection.prior=bbse,
never trained on: data.target_langs does not list English).

    python -m experiments.skewed_target --source-model RUN/source/model --shares 0.6 0.3 0.1 --out runs/skew
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from conlst_ray.pipeline.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LANGS = ["en", "ar", "de", "fr", "sw", "ur", "zh"]
LABELS = ["entailment", "neutral", "contradiction"]


def subsample(src: Path, dst: Path, shares, n: int, seed: int) -> list[int]:
    """The first rows of each class of ``src`` in the given shares (the same
    row indices in every language: XNLI is row-aligned), written to ``dst``."""
    lines = src.read_text(encoding="utf-8").splitlines()
    labels = np.array([LABELS.index(line.rsplit("\t", 1)[1]) for line in lines])
    rng = np.random.default_rng(seed)
    picks = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), int(round(n * s)), replace=False)
                                    for c, s in enumerate(shares)]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines[i] + "\n" for i in picks), encoding="utf-8")
    return picks.tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-model", required=True)
    ap.add_argument("--shares", type=float, nargs=3, default=[0.6, 0.3, 0.1])
    ap.add_argument("--rows", type=int, default=500, help="unlabelled and scored rows per language")
    ap.add_argument("--priors", nargs="+", default=["bbse", "source"])
    ap.add_argument("--out", default=str(REPO / "runs" / "skew"))
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    out = Path(args.out)
    tag = "-".join(f"{round(100 * s)}" for s in args.shares)
    data = out / f"data-{tag}"
    for lang in LANGS:
        # dev rows 0-1244 only: English dev rows 1245-2489 stay free for the label-free signal
        dev = data / "dev" / f"dev-{lang}.tsv"
        lines = (DATA / "xnli" / f"dev-{lang}.tsv").read_text(encoding="utf-8").splitlines()[:1245]
        half = data / "dev_pool" / f"dev-{lang}.tsv"
        half.parent.mkdir(parents=True, exist_ok=True)
        half.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        subsample(half, dev, args.shares, args.rows, 0)
        subsample(DATA / "xnli_test_a" / f"test-{lang}.tsv", data / "test" / f"test-{lang}.tsv", args.shares,
                  args.rows, 1)
    results = {}
    for prior in args.priors:
        name = f"skew{tag}-{prior}"
        config = str(REPO / "tune_configs" / "xnli_e5_small_cpu.yaml")
        cmd = [sys.executable, "-m", "conlst_ray.run", "--config", config, f"output_dir={out}", f"run_name={name}",
               f"model.source_checkpoint={args.source_model}",
               f"data.target_train=xnli_tsv:{data}/dev/dev-{{lang}}.tsv",
               f"data.target_test=xnli_tsv:{data}/test/test-{{lang}}.tsv",
               "data.source_dev_skip_rows=1245", f"selection.prior={prior}", *args.overrides, "--resume"]
        subprocess.run(cmd, check=True)
        table = (RunDir(out / name).results / "accuracy_test.csv").read_text().splitlines()
        results[prior] = {"accuracy_test": table,
                          "handed_back": json.loads((RunDir(out / name).handed_back_record).read_text())["stage"],
                          "class_prior": (RunDir(out / name).results / "class_prior.csv").read_text().splitlines()}
    (out / f"skew{tag}.json").write_text(json.dumps(results, indent=1))
    for prior, r in results.items():
        print(f"selection.prior={prior}: handed back {r['handed_back']}")
        print("\n".join(r["accuracy_test"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
