"""The embedded benchmark as three tasks -> docs/TASKS.md.

The NLI default (pairs, 3 classes), the single-text 5-class variant and the
2-class pair variant, each run once by ``python -m conlst_ray.run`` with the
default settings otherwise (seed 0). It shows the pipeline on tasks other
than NLI and measures what the number of classes does to Eq. 4/5: the share
of a confident anchor's negatives that belong to its own gold class.

    .venv/bin/python -m experiments.tasks          # about 12 minutes on 2 CPU cores

Runs live under --out (default runs/tasks); finished runs are reused. A
"## Discussion" section written into the document by hand is kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conlst_ray.config import load_config
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.reporting.tables import read_table, to_markdown
from conlst_ray.storage.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


TASKS = {
    "NLI (pairs, 3 classes; the default)": [],
    "single texts, 5 classes": ["--config", "tune_configs/synthetic_single5.yaml"],
    "text pairs, 2 classes": ["--config", "tune_configs/synthetic_pair2.yaml"],
}


def run(name: str, args: list, out: Path) -> Path:
    run_dir = out / name
    if (RunDir(run_dir).results / "accuracy_test.csv").is_file():
        return run_dir
    cmd = [sys.executable, "-m", "conlst_ray.run", *args, f"output_dir={out}", f"run_name={name}", "seed=0"]
    cmd += ["--resume"] if run_dir.is_dir() else []
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"[tasks] {name}: {time.time() - t0:.0f} s")
    return run_dir


def own_class_shares(run_dir: Path) -> tuple[float, float, float]:
    """Mean over target languages: expected share of a confident anchor's
    negatives whose gold class is the anchor's own (wrong / right
    pseudo-labels), and the share of confident anchors that are wrong."""
    from conlst_ray.ray_jobs.sharded import read_outputs
    from conlst_ray.reporting.analysis import own_class_by_language

    cfg = load_config(RunDir(run_dir).config_file)
    shares = own_class_by_language(read_outputs(RunDir(run_dir).pseudo_labels("source")),
                                   read_outputs(RunDir(run_dir).target_corpus), cfg.data.target_langs,
                                   cfg.conl.gamma, len(cfg.data.task.labels))
    return tuple(float(np.nanmean([v[k] for v in shares.values()])) for k in range(3))


def section(title: str, run_dir: Path) -> str:
    results = RunDir(run_dir).results
    rows = {r["model"]: r for r in read_table(results / "accuracy_test.csv")}
    shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
    parts = [f"## {title}", "", f"Run: `{shown}`.", "", "Accuracy (%), test:", "",
             (results / "accuracy_test.md").read_text()]
    if (results / "class_accuracy_test.md").is_file():
        parts += ["Accuracy (%) per gold label, target languages, test:", "",
                  (results / "class_accuracy_test.md").read_text()]
    parts += [(results / "calibration_by_class.md").read_text(), ""]
    gain = float(rows["CoNLST"]["avg"]) - float(rows["zero-shot"]["avg"])
    parts.append(f"CoNLST - zero-shot (test, target average): {gain:+.1f} points.\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tasks")
    parser.add_argument("--doc", default="docs/TASKS.md")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    dirs = {title: run(f"t{i}", extra, out) for i, (title, extra) in enumerate(TASKS.items())}
    shares = []
    for title, d in dirs.items():
        classes = len(load_config(RunDir(d).config_file).data.task.labels)
        w, r, wrong = own_class_shares(d)
        shares.append([title, classes, f"{100 / (classes - 1):.0f} %", f"{100 * w:.1f} %", f"{100 * r:.1f} %",
                       f"{100 * wrong:.1f} %"])
    doc = ["# The embedded benchmark as three tasks", "",
           "Produced by `.venv/bin/python -m experiments.tasks` (seed 0, default settings otherwise: "
           "6,000 source rows, 2,000 unlabelled rows and 600 dev/test rows per language, tiny BERT, "
           "one Ray Train worker; 2 CPU cores).", "",
           "## Eq. 4/5 and the number of classes", "",
           "A confident anchor (confidence >= gamma) takes its negatives from the rows confidently predicted "
           "as each class other than its pseudo-label. The table gives, averaged over the four target "
           "languages, the expected share of those negatives whose gold class is the anchor's own, for "
           "anchors whose pseudo-label is wrong and right; 'if the pool were exact' is 1 / (C - 1), the share "
           "for a wrong anchor when every pool row's pseudo-label is right.", "",
           to_markdown(["task", "classes C", "wrong anchor, if the pool were exact",
                        "wrong anchor, measured", "right anchor, measured", "confident anchors that are wrong"],
                       shares),
           ""]
    doc += [section(title, d) for title, d in dirs.items()]
    # the hand-written discussion of an earlier version is kept
    old = (REPO / args.doc).read_text(encoding="utf-8") if (REPO / args.doc).is_file() else ""
    if "\n## Discussion" in old:
        doc.append(old[old.index("\n## Discussion") + 1:])
    atomic_write_text(REPO / args.doc, "\n".join(doc))
    print(f"[tasks] wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
