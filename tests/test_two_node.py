"""A small search on a real two-node Ray cluster (``ray.cluster_utils.Cluster``):
its trials (each training its stages in its own process) and its
pseudo-labelling actors use both nodes.

The cluster lives in a subprocess (tests/two_node_job.py, run by the
``two_node_search`` fixture) so that it does not meet the single Ray instance
the rest of the session shares; tests/test_tune.py checks the same search's
outputs."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_search_and_pseudo_labelling_use_both_nodes(two_node_search):
    out, _, proc = two_node_search
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placement = json.loads((out / "placement.json").read_text())
    assert len(placement["nodes"]) == 2
    assert placement["trials"] == placement["nodes"]              # trials trained on both nodes
    assert placement["inference_actors"] == placement["nodes"]    # the pseudo-labelling pool spans both
    trials = [p for p in (out / "tune" / "s-trials").iterdir() if p.is_dir()]
    assert len(trials) == 2 and all((t / "conl" / "model").is_dir() for t in trials)
