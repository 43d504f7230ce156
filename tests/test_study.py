"""experiments/study.py writes docs/RESULTS.md with its tables and figures
(a one-seed quick run of the full method and one ablation, run by
tests/jobs.py beside the other tests)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quick_study_writes_results_with_tables_and_figures(quick_study):
    assert quick_study["rc"] == 0, quick_study["log"]
    docs, nl_only = Path(quick_study["docs"]), quick_study["variant"]
    text = (docs / "RESULTS.md").read_text()
    for row in ("| zero-shot |", "| CoNLST |", "| w/o self-training (ST) |", f"| {nl_only} |"):
        assert row in text, row
    assert "before -> after CoNL" in text and "before -> after NL (cross-entropy only)" in text
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", text):          # every figure it shows exists
        assert (docs / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", text)) == 2          # Fig. 3 and Fig. 4
    assert (docs / "ablation.csv").read_text().count("\n") == 5           # header + 4 variants
