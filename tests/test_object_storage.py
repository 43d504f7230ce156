"""Nodes that share no filesystem: run artefacts in an
S3-compatible server, a node-local cache per node, and a preflight that
refuses a local output_dir some node cannot see.

Both clusters live in subprocesses (tests/storage_job.py,
tests/unshared_node_job.py) so they do not meet the session's Ray; they
run beside the other tests (tests/background.py) and conftest.py hands
their results here."""

from pathlib import Path

import pytest
from helpers import private_mounts

pytestmark = pytest.mark.slow


def storage_log(out: Path) -> list[tuple[int, str, str]]:
    lines = (out / "storage.log").read_text().splitlines()
    return [(int(pid), op, path) for pid, op, path in (line.split(" ", 2) for line in lines)]


def test_every_artefact_of_the_run_is_in_object_storage(storage_job):
    _, result = storage_job
    files = set(result["files"])
    for path in ["runs/r/config.yaml", "runs/r/source/model/model.safetensors", "runs/r/conl/model/model.safetensors",
                 "runs/r/ssl/model/model.safetensors", "runs/r/ssl/DONE.json", "runs/r/conl/steps.jsonl",
                 "runs/r/results/accuracy_dev.csv", "runs/r/results/handed_back.json"]:
        assert path in files, path
    assert any(f.startswith("runs/r/pseudo_labels/source/lang=far/shard-") for f in files)
    assert any(f.startswith("runs/r/corpus/target_train/tokens-") and f.endswith(".arrow") for f in files)
    assert "runs/r/conl/checkpoint/train_state.pt" in files   # an in-process stage's checkpoint (a Ray Train
    # group's, across the nodes: test_a_killed_worker_resumes_from_the_checkpoint_in_storage)


def test_each_node_filled_its_own_cache_from_storage(storage_job):
    """Every node fetched the models it ran from storage (the driver trained
    them: nothing reached a node but through the bucket); corpus shards and
    token files written on one node were fetched by another, or by the driver."""
    out, result = storage_job
    log = storage_log(out)
    fetched = [(pid, path) for pid, op, path in log if op == "fetch" and pid != result["driver_pid"]]
    for root in result["nodes"].values():
        mine = [path for _, path in fetched if path.startswith(root + "/")]
        assert any(p.endswith("model.safetensors") for p in mine), root
    written_by = {path.split("/conlst-storage/", 1)[-1]: pid for pid, op, path in log if op == "publish"}
    crossed = [path for pid, op, path in log if op == "fetch" and path.endswith((".arrow", ".parquet"))
               and written_by.get(path.split("/conlst-storage/", 1)[-1], pid) != pid]
    assert crossed


def test_no_worker_touched_the_drivers_local_files(storage_job):
    out, result = storage_job
    driver_root = result["restart"]["driver_root"]
    assert not (out / "forbidden.log").exists() or (out / "forbidden.log").read_text() == ""
    workers = [path for pid, _, path in storage_log(out) if pid != result["driver_pid"]]
    assert workers and not [p for p in workers if p.startswith(driver_root)]
    assert all(any(p.startswith(root + "/") for root in result["nodes"].values()) for p in workers)


def test_a_killed_worker_resumes_from_the_checkpoint_in_storage(storage_job):
    _, result = storage_job
    restart = result["restart"]
    assert restart["stage_dir_is_remote"] and restart["killed"]               # the failure did happen
    assert restart["final_step"] == 16                                       # same count as uninterrupted
    assert [s for s, _ in restart["steps"]] == list(range(1, 17))            # each step once
    assert all(t < restart["killed_at"] for s, t in restart["steps"] if s <= 8)   # epoch 1 restored, not redone
    assert all(t > restart["killed_at"] for s, t in restart["steps"] if s > 8)
    assert result["restart_checkpoints"]


@pytest.mark.skipif(not private_mounts(), reason="needs user and mount namespaces (unshare -rm) to hide a folder")
def test_a_local_output_dir_a_node_cannot_see_is_refused_in_preflight(unshared_node):
    result, out = unshared_node["result"], Path(unshared_node["out"])
    assert unshared_node["rc"] == 0 and result["nodes"] == 2, unshared_node["stderr"][-3000:]
    assert result["rc"] == 2
    errors = [line for line in unshared_node["stderr"].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: output_dir = {out / 'head-local' / 'runs'}")
    assert "do not see" in errors[0] and "s3://" in errors[0]
    assert result["left_behind"] == []                  # nothing written before the refusal
    assert result["visible_accepted"]                   # a folder every node sees passes
