"""The ablation table (the paper's Table 3 layout) over finished runs:
a row per variant, runs sharing a name (seeds) as mean and std."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.reporting.selection import SUFFIX
from conlst_ray.reporting.tables import read_table, write_table


def final_row(run_dir: Path) -> str:
    """The last trained model of a run's table: its CoNLST (or self-training,
    or CoNL) row, not a class-prior correction of it (name it to compare those)."""
    names = [r["model"] for r in read_table(RunDir(run_dir).accuracy_table("dev"))]
    return [n for n in names if not n.endswith(SUFFIX)][-1]


def read_avg(run_dir: Path, split: str, row: str) -> float:
    path = RunDir(run_dir).accuracy_table(split)
    for r in read_table(path):
        if r["model"] == row:
            return float(r["avg"])
    raise ValueError(f"{path}: no row named {row!r}")


def parse_ablation_spec(spec: str) -> tuple[str, Path, str | None]:
    """'NAME=RUN_DIR[:ROW]' (or a bare RUN_DIR, named after itself)."""
    name, _, rest = spec.partition("=") if "=" in spec else (None, "", spec)
    path, _, row = rest.partition(":")
    run_dir = Path(path)
    if not RunDir(run_dir).accuracy_table("dev").is_file():
        raise ValueError(f"--ablation {spec!r}: {RunDir(run_dir).accuracy_table('dev')} not found "
                         f"(run python -m conlst_ray.report {run_dir} first)")
    return name or run_dir.name, run_dir, row or None


def ablation_table(specs: list[str], stem: Path) -> str:
    """Table 3 layout: a row per variant, its average target accuracy on dev
    and test; runs sharing a name (seeds) give mean and sample std."""
    groups: dict[str, list[tuple[Path, str]]] = {}
    for spec in specs:
        name, run_dir, row = parse_ablation_spec(spec)
        groups.setdefault(name, []).append((run_dir, row or final_row(run_dir)))
    header = ["variant", "runs", "dev avg", "dev std", "test avg", "test std"]
    rows = []
    for name, runs in groups.items():
        cells = [name, len(runs)]
        for split in ("dev", "test"):
            vals = [read_avg(d, split, row) for d, row in runs
                    if RunDir(d).accuracy_table(split).is_file()]
            cells += [float(np.mean(vals)) if vals else float("nan"),
                      float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")]
        rows.append(cells)
    return write_table(stem, header, rows)
