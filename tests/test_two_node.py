"""A small search on a real two-node Ray cluster (``ray.cluster_utils.Cluster``):
its trials' training workers and its pseudo-labelling actors use both nodes.

The cluster lives in a subprocess (tests/two_node_job.py) so that it does not
meet the single Ray instance the rest of the session shares."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
JOB = Path(__file__).with_name("two_node_job.py")


def test_search_and_pseudo_labelling_use_both_nodes(tmp_path):
    # Clients that join a token-authenticated cluster by address need the mode set.
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           # Ray Data starts a pool's actors asynchronously: on a loaded machine 800
           # rows can be labelled before the second actor is placed. Wait for both.
           "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"}
    proc = subprocess.run([sys.executable, str(JOB), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placement = json.loads((tmp_path / "placement.json").read_text())
    assert len(placement["nodes"]) == 2
    assert placement["train_workers"] == placement["nodes"]       # trials trained on both nodes
    assert placement["inference_actors"] == placement["nodes"]    # the pseudo-labelling pool spans both
    trials = [p for p in (tmp_path / "tune" / "s-trials").iterdir() if p.is_dir()]
    assert len(trials) == 2 and all((t / "conl" / "model").is_dir() for t in trials)
