"""python -m conlst_ray.tune end to end (smoke sizes): shared work once per
search, outputs, resume of a finished search."""

from pathlib import Path

import pytest
import yaml

from conlst_ray.commands import tune as tune_cli
from conlst_ray.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def search(two_node_search, ray_session):
    """The smoke search of tests/two_node_job.py (2 trials, one worker each:
    every stage in-process), run once for this module and
    test_two_node; its resume below runs on this session's single node."""
    out, args, proc = two_node_search
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "tune", args


def test_shared_work_is_computed_once_for_all_trials(search):
    storage, _ = search
    trials = sorted(p for p in (storage / "s-trials").iterdir() if p.is_dir())
    assert len(trials) == 2
    shared = storage / "s-shared"
    assert (shared / "source" / "DONE.json").is_file() and (shared / "pseudo_labels" / "DONE.json").is_file()
    for trial in trials:  # trials train CoNL (and SSL) only, from the shared source model and labels
        assert (trial / "conl" / "model").is_dir() and not (trial / "source").exists()
    assert len(list(storage.rglob("source/model/model.safetensors"))) == 1
    # every corpus is tokenised once, by the shared work: trials only map the files
    assert [p.parent.parent.name for p in storage.rglob("tokens-*")] != []
    assert not list((storage / "s-trials").rglob("tokens-*"))


def test_outputs_best_config_and_tables(search):
    storage, _ = search
    out = storage / "s"
    best = load_config(out / "best_config.yaml")               # runnable with python -m conlst_ray.run
    assert 0.7 <= best.conl.gamma <= 0.95 and best.conl.num_negatives in (4, 8)
    assert (out / "trials.csv").read_text().count("\n") == 3   # header + 2 trials
    import csv

    with open(out / "trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    for row in trials:   # short names, the metric in percent, how each trial ended
        assert row["trial"].startswith("trial_") and len(row["trial"]) < 30
        assert 1.0 < float(row["target_dev_acc (%)"]) <= 100.0
        assert row["status"] in ("finished", "stopped early (ASHA)")
    assert "| zero-shot |" in (out / "best_accuracy_dev.md").read_text()
    assert yaml.safe_load((out / "best_config.yaml").read_text())["data"]["synthetic"]["n_unlabelled"] == 200
    assert len(list(out.glob("trial_*/events.out.tfevents*"))) == 2  # TensorBoard logs per trial
    # the best trial's CoNL model against the shared initial pseudo-labels (Table 4, Fig. 3)
    assert "before -> after CoNL" in (out / "calibration.md").read_text()
    # the search ran a single-text 5-class task: its reports name the labels
    labels = ["very_bad", "bad", "mixed", "good", "very_good"]
    assert all(f"| {name} " in (out / "calibration_by_class.md").read_text() for name in labels)
    assert (out / "best_class_accuracy_dev.csv").read_text().splitlines()[0] == ",".join(["model"] + labels)
    assert (out / "calibration_hist_by_class.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "calibration_hist.png").read_bytes()[:4] == b"\x89PNG"


def test_the_search_names_the_best_trials_model(two_node_search):
    out, _, proc = two_node_search
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Best trial's model: "))
    model = line.split(": ", 1)[1]
    assert "/trial_" in model and (Path(model) / "model.safetensors").is_file()


def test_resume_of_a_finished_search_reruns_no_trial(search):
    storage, args = search
    before = {p: p.stat().st_mtime_ns for p in (storage / "s-trials").rglob("metrics.jsonl")}
    assert tune_cli.main(args + ["--resume"]) == 0
    after = {p: p.stat().st_mtime_ns for p in (storage / "s-trials").rglob("metrics.jsonl")}
    assert before == after and len(after) >= 2


def test_report_reads_a_search_and_a_trial_directory(search, capsys):
    from conlst_ray.commands import report as report_cli

    storage, _ = search
    capsys.readouterr()
    assert report_cli.main([str(storage / "s")]) == 0
    text = capsys.readouterr().out
    assert "Trials:" in text and "Best trial: trial_" in text and "best_config.yaml" in text
    trial = next(p for p in sorted((storage / "s-trials").iterdir()) if (p / "trial.json").is_file())
    assert report_cli.main([str(trial)]) == 0
    text = capsys.readouterr().out
    assert "| zero-shot |" in text and "| CoNL |" in text and "Handed back" in text
    assert (trial / "results" / "accuracy_dev.csv").is_file()
