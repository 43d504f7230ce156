"""experiments/study.py writes docs/RESULTS.md with its tables and figures
(a one-seed quick run of the full method and one ablation)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_quick_study_writes_results_with_tables_and_figures(tmp_path):
    docs = tmp_path / "docs"
    nl_only = "w/o contrastive learning (NL with cross-entropy)"
    proc = subprocess.run([sys.executable, "-m", "experiments.study", "--seeds", "0", "--quick",
                           "--out", str(tmp_path / "runs"), "--docs", str(docs), "--variants", nl_only],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (docs / "RESULTS.md").read_text()
    for row in ("| zero-shot |", "| CoNLST |", "| w/o self-training (ST) |", f"| {nl_only} |"):
        assert row in text, row
    assert "before -> after CoNL" in text and "before -> after NL (cross-entropy only)" in text
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", text):          # every figure it shows exists
        assert (docs / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", text)) == 2          # Fig. 3 and Fig. 4
    assert (docs / "ablation.csv").read_text().count("\n") == 5           # header + 4 variants
