"""A new stage is a record and an algorithm class (and its test): the
pipeline, the fingerprints, the run layout, the report, the progress lines
and --resume take it from the stage table (config/stages.py) and the
algorithm registry (algorithm/registry.py). The test adds a toy stage to a
copy of the package, touching exactly those two files, and runs the
embedded default with it in real processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from background import RUNNER
from conftest import _job_fixture

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.n_source_train=240", "data.synthetic.n_unlabelled=60", "data.synthetic.n_dev=30",
        "data.synthetic.n_test=30", "data.target_langs=[near]", "source.epochs=1", "ssl.iterations=1",
        "resources.num_workers=0", "data.eval_during_training=false", "run_name=r", "data.target_dev=null"]

# file 1 of 3: the record, placed after CoNL
RECORD = ('    Stage("toy", "a toy stage: a copy of its input model", "train", reads=(SOURCE, CONL), rows=("toy",),\n'
          '          over_target=True),\n')
# file 2 of 3: the algorithm
TOY = '''"""A toy stage: its model is its input model, and it logs one metric."""

import torch

from conlst_ray.algorithm.base import StageAlgorithm
from conlst_ray.algorithm.registry import register


@register("toy")
class Toy(StageAlgorithm):
    epochs = 1

    def __init__(self, model, cfg, tokenizer, device, source, target=None):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.tokenizer, self.pad_id, self.source, self.target = tokenizer, tokenizer.pad_token_id, source, target
        self.optimizer, self.scheduler, self.max_grad_norm = torch.optim.SGD(model.parameters(), lr=0.0), None, 1.0

    def batches(self, epoch, first_step):
        return iter(())

    def end_epoch(self, epoch):
        return {"toy_target_rows": float(len(self.target))}
'''


@RUNNER.register("toy_stage", lane=1)
def run_toy_stage(root: Path) -> dict:
    """A copy of the package with the toy stage added (two files), the
    embedded default run with it, then resumed: a background job
    (background.py), beside the in-process tests."""
    package = root / "pkg" / "conlst_ray"
    shutil.copytree(REPO / "conlst_ray", package, ignore=shutil.ignore_patterns("__pycache__"))
    stages = package / "config" / "stages.py"
    anchor = "    Stage(BACKTRANSLATION,"
    assert stages.read_text().count(anchor) == 1
    stages.write_text(stages.read_text().replace(anchor, RECORD + anchor))
    (package / "algorithm" / "toy.py").write_text(TOY)
    env = {**os.environ, "PYTHONPATH": str(root / "pkg")}  # the copy, in the command and in Ray's workers

    def run(*extra) -> subprocess.CompletedProcess:
        return RUNNER.run([sys.executable, "-m", "conlst_ray.run", *TINY, f"output_dir={root / 'out'}", *extra],
                          timeout=600, cwd=root, env=env)

    first = run()
    done = {p.parent.name: p.stat().st_mtime_ns for p in (root / "out" / "r").glob("*/DONE.json")}
    again = run("--resume")
    return {"run": root / "out" / "r", "first": first, "again": again, "done": done}



toy_stage = _job_fixture("toy_stage", "The embedded default with a toy stage added in two files, then resumed.")


@pytest.mark.slow
def test_a_toy_stage_in_two_files_runs_after_conl_and_is_reported(toy_stage):
    first, run = toy_stage["first"], toy_stage["run"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / "toy" / "model" / "model.safetensors").is_file()                      # the run layout
    fingerprint = lambda stage: json.loads((run / stage / "FINGERPRINT.json").read_text())  # noqa: E731
    assert fingerprint("toy")["inputs"]["pseudo-labels"] is None                       # it reads CoNL's model only
    # self-training starts from the toy's model, a copy of CoNL's: the same weights stamp
    assert fingerprint("ssl")["inputs"]["model weights"] == fingerprint("toy")["inputs"]["model weights"]
    assert any(line.startswith("[toy] epoch 1/1 done") for line in first.stdout.splitlines()), first.stdout
    metrics = [json.loads(line) for line in (run / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["stage"] == "toy" and metrics[-1]["toy_target_rows"] == 60.0   # its one metric
    table = (run / "results" / "accuracy_test.csv").read_text().splitlines()[1:]
    rows = {row.split(",")[0]: row.split(",")[1:] for row in table}
    assert [r for r in rows if "prior" not in r] == ["zero-shot", "CoNL", "toy", "CoNLST"]   # the report, in order
    assert rows["toy"] == rows["CoNL"]                                                  # a copy of CoNL's model


@pytest.mark.slow
def test_a_toy_stage_resumes_without_running_again(toy_stage):
    again = toy_stage["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    done = {p.parent.name: p.stat().st_mtime_ns for p in toy_stage["run"].glob("*/DONE.json")}
    assert done == toy_stage["done"] and "toy" in done
