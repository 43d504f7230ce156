"""No real-data config and no study row scores rows it trained on: in every
shipped config on real data, and in the study's configs (GPU and --cpu),
the scored corpora (data.target_dev, data.target_test) and the unlabelled
target text (data.target_train) are different files, and no scored pair
appears in the unlabelled text. A config that scores its unlabelled text
is warned about in preflight and labelled transductive in the report."""

from pathlib import Path

import pytest

from conlst_ray.config import load_config, with_values
from tests.conftest import REPO

REAL = sorted(p for p in (REPO / "tune_configs").glob("*.yaml")
              if any(s in p.read_text() for s in ("xnli", "paws-x", "amazon_reviews")))


def files_of(cfg, key: str) -> set:
    """The files (or hub splits) a corpus key reads, one per target language."""
    spec = getattr(cfg.data, key)
    if not spec:
        return set()
    fmt, _, rest = spec.partition(":")
    out = set()
    for lang in cfg.data.target_langs:
        where = rest.replace("{lang}", lang)
        out.add(str(Path(where).resolve()) if fmt != "hf" else f"hf:{where}")
    return out


def pairs_in(path: str) -> set:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {tuple(line.split("\t")[:2]) for line in lines}


def study_configs():
    from experiments import real_gain  # the repository root is on sys.path under python -m pytest

    class Args:
        tiny = False
        overrides: list = []

    out = {}
    for cpu in (False, True):
        Args.cpu = cpu
        out["study --cpu" if cpu else "study"] = real_gain.study_config(Args)
    return out


def configs():
    out = {p.name: load_config(p) for p in REAL}
    out.update(study_configs())
    return out


def test_the_real_configs_are_all_checked():
    names = set(configs())
    assert {"xnli_e5_small.yaml", "xnli_e5_small_cpu.yaml", "xnli_mbert.yaml", "xnli_xlmr_large.yaml",
            "study", "study --cpu"} <= names


@pytest.mark.parametrize("name", sorted(configs()))
def test_scored_rows_are_never_the_unlabelled_rows(name, shared_data):
    cfg = configs()[name]
    unlabelled = files_of(cfg, "target_train")
    assert unlabelled, f"{name}: no unlabelled target text"
    for key in ("target_dev", "target_test"):
        scored = files_of(cfg, key)
        assert not scored & unlabelled, f"{name}: data.{key} is the unlabelled text"
        local = [f for f in scored if not f.startswith("hf:") and Path(f).is_file()]
        for scored_file in local:  # the same pair must not sit in both files either
            suffix = Path(scored_file).name.split("-")[-1]
            lang_file = next(u for u in unlabelled if Path(u).name.split("-")[-1] == suffix)
            assert not pairs_in(scored_file) & pairs_in(lang_file), f"{name}: {scored_file} shares pairs"
    if name.startswith("study") or "e5" in name:
        assert "xnli_test_a" in (cfg.data.target_test or ""), f"{name}: real e5 runs score on xnli_test_a"


def test_a_config_that_scores_its_unlabelled_text_is_named_transductive():
    from conlst_ray.pipeline.preflight import transductive_warning
    from conlst_ray.reporting.report import split_label

    spec = "xnli_tsv:../shared/data/xnli/dev-{lang}.tsv"
    cfg = load_config(None, [f"data.target_train={spec}", f"data.target_dev={spec}",
                             "data.target_test=xnli_tsv:../shared/data/xnli_test_a/test-{lang}.tsv"])
    assert split_label(cfg, "dev").startswith("dev (transductive")
    assert split_label(cfg, "test") == "test"
    assert transductive_warning(cfg) is None   # the warning is about the test corpus
    same = load_config(None, [f"data.target_train={spec}", f"data.target_test={spec}"])
    line = transductive_warning(same)
    assert "transductive" in line and "\n" not in line and "xnli/dev-{lang}.tsv" in line


def test_the_label_free_signal_must_not_read_the_originals_of_the_unlabelled_rows(tmp_path):
    from conlst_ray.data.corpora import source_corpus
    from conlst_ray.pipeline.preflight import overlap_warning

    spec = "xnli_tsv:../shared/data/xnli/dev-{lang}.tsv"
    base = [f"data.target_train={spec}", "data.source_lang=en", "data.target_langs=[fr]",
            "data.source_dev=xnli_tsv:../shared/data/xnli/dev-en.tsv", "data.max_rows=500"]
    line = overlap_warning(load_config(None, base))
    assert "originals" in line and "data.source_dev_skip_rows=500" in line and "\n" not in line
    assert overlap_warning(load_config(None, base + ["data.source_dev_skip_rows=500"])) is None
    # the CPU config a user runs: its English dev rows are 500-999, not 0-499
    cfg = load_config(REPO / "tune_configs" / "xnli_e5_small_cpu.yaml", [])
    assert overlap_warning(cfg) is None
    rows = source_corpus(with_values(cfg, {"data.source_dev": str(cfg.data.source_dev).replace(
        "../shared", str(REPO.parent / "shared"))}).data, "dev")
    lines = (REPO.parent / "shared" / "data" / "xnli" / "dev-en.tsv").read_text().splitlines()
    assert rows.num_rows == 500 and rows.column("text")[0].as_py() == lines[500].split("\t")[0]
    assert rows.column("text")[-1].as_py() == lines[999].split("\t")[0]
