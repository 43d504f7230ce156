"""The storage layer against a real S3-compatible server (moto, on
localhost): two "nodes" are two cache roots (``CONLST_RAY_CACHE_DIR``)."""

import os
from pathlib import Path

import pytest
from storage_job import BUCKET, start_s3  # tests/ is on sys.path under pytest

from conlst_ray.storage import mirror as storage


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    import pyarrow.fs as pafs

    out = tmp_path_factory.mktemp("s3")
    server, endpoint = start_s3(out)
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
    yield f"s3://{BUCKET}/runs?endpoint_override={endpoint}&scheme=http"
    server.kill()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def node(monkeypatch, root: Path) -> None:
    monkeypatch.setenv(storage.CACHE_ENV, str(root))


def test_a_uri_maps_to_a_mirror_that_every_node_re_roots(tmp_path, monkeypatch, bucket):
    node(monkeypatch, tmp_path / "a")
    path = storage.mirror(storage.join(bucket, "r", "ssl", "model"))
    assert path.is_relative_to(tmp_path / "a") and storage.is_remote(path)
    assert storage.location(path) == storage.join(bucket, "r", "ssl", "model")
    node(monkeypatch, tmp_path / "b")
    assert storage.here(path) == storage.mirror(storage.join(bucket, "r", "ssl", "model"))
    assert storage.here(path).is_relative_to(tmp_path / "b")
    assert storage.mirror("/plain/dir") == Path("/plain/dir") and not storage.is_remote("/plain/dir")
    assert storage.join("/plain", "x") == "/plain/x"


def test_what_one_node_publishes_another_fetches_once(tmp_path, monkeypatch, bucket):
    log = tmp_path / "log"
    monkeypatch.setenv(storage.LOG_ENV, str(log))
    node(monkeypatch, tmp_path / "a")
    folder = storage.mirror(storage.join(bucket, "r1", "model"))
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"weights")
    (folder / "sub").mkdir()
    (folder / "sub" / "t.json").write_text("{}")
    storage.publish(folder)
    assert storage.exists(folder / "w.bin") and storage.listdir(folder) == ["sub", "w.bin"]
    node(monkeypatch, tmp_path / "b")
    got = storage.fetch(folder)
    assert got.is_relative_to(tmp_path / "b") and (got / "w.bin").read_bytes() == b"weights"
    assert (got / "sub" / "t.json").read_text() == "{}"
    fetched = [line for line in log.read_text().splitlines() if " fetch " in line]
    storage.fetch(folder)  # same size and time as stored: nothing downloaded again
    assert [line for line in log.read_text().splitlines() if " fetch " in line] == fetched
    # node a changes the object: node b's copy is stale and is replaced
    node(monkeypatch, tmp_path / "a")
    (storage.here(folder) / "w.bin").write_bytes(b"new weights!")
    storage.publish(folder / "w.bin")
    node(monkeypatch, tmp_path / "b")
    assert (storage.fetch(folder) / "w.bin").read_bytes() == b"new weights!"


def test_a_file_removed_from_storage_is_not_read_from_a_stale_mirror(tmp_path, monkeypatch, bucket):
    node(monkeypatch, tmp_path / "a")
    folder = storage.mirror(storage.join(bucket, "r2", "tokens", "lang=xx"))
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"shard-{i}.arrow").write_text(str(i))
    storage.publish(folder)
    node(monkeypatch, tmp_path / "b")
    assert [p.name for p in storage.files(folder, "shard-*.arrow")] == ["shard-0.arrow", "shard-1.arrow",
                                                                        "shard-2.arrow"]
    node(monkeypatch, tmp_path / "a")  # node a rebuilds the folder with fewer shards
    storage.remove(folder)
    storage.here(folder).mkdir(parents=True)
    (storage.here(folder) / "shard-0.arrow").write_text("new")
    storage.publish(folder)
    node(monkeypatch, tmp_path / "b")
    assert (storage.here(folder) / "shard-2.arrow").exists()           # still in b's mirror ...
    shards = storage.files(folder, "shard-*.arrow")
    assert [p.name for p in shards] == ["shard-0.arrow"] and shards[0].read_text() == "new"   # ... never read


def test_a_reader_can_fetch_beside_the_mirror_a_writer_appends_to(tmp_path, monkeypatch, bucket):
    node(monkeypatch, tmp_path / "a")
    steps = storage.mirror(storage.join(bucket, "r3", "conl", "steps.jsonl"))
    steps.parent.mkdir(parents=True)
    steps.write_text("1\n")
    storage.publish(steps)
    with steps.open("a") as fh:  # the writer goes on; storage has the older copy
        fh.write("2\n")
    copy = storage.fetch(steps, into=tmp_path / "copy.jsonl")
    assert copy == tmp_path / "copy.jsonl" and copy.read_text() == "1\n"
    assert steps.read_text() == "1\n2\n"                                # the writer's file untouched


def test_a_local_run_is_untouched(tmp_path):
    (tmp_path / "f").write_text("x")
    assert storage.fetch(tmp_path / "f") == tmp_path / "f"
    storage.publish(tmp_path / "f")
    assert storage.files(tmp_path, "f") == [tmp_path / "f"] and storage.listdir(tmp_path) == ["f"]
    storage.remove(tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_a_restarted_worker_drops_replayed_and_cut_records(tmp_path):
    """Logs published while being written may end in half a line; a worker
    restarted from the checkpoint at step 2 (epoch 0 done) keeps steps 1-2
    and epoch 0, and drops the cut line instead of failing on it."""
    import json

    from conlst_ray.training.loop import drop_replayed_records

    steps = "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))
    (tmp_path / "steps.jsonl").write_text(steps + '{"step": 4, "lo')
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0}) + "\n" + json.dumps({"epoch": 1}) + "\n")
    drop_replayed_records(tmp_path / "metrics.jsonl", tmp_path / "steps.jsonl", step=2, epoch=1)
    assert [json.loads(x)["step"] for x in (tmp_path / "steps.jsonl").read_text().splitlines()] == [1, 2]
    assert [json.loads(x)["epoch"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_uri_with_credentials_is_refused_and_no_secret_is_printed_or_written(tmp_path, bucket, form):
    """A secret in output_dir (as user:password@, or as access_key/secret_key
    parameters) is refused in one line that shows it masked, before anything
    is written: no printed line, no file under the user's home, cache or run
    folders, no object in the bucket holds it. tune --storage-path alike."""
    import subprocess
    import sys

    import pyarrow.fs as pafs

    secret = "S3cr3tValue9"
    base, query = bucket.split("?", 1)
    uri = (base.replace("s3://", f"s3://AKIDEXAMPLE:{secret}@") + "?" + query if form == "userinfo"
           else f"{bucket}&access_key=AKIDEXAMPLE&secret_key={secret}")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"),
           storage.CACHE_ENV: str(tmp_path / "cache")}
    for args in (["-m", "conlst_ray.run", f"output_dir={uri}", "run_name=r"],
                 ["-m", "conlst_ray.tune", "--storage-path", uri, f"output_dir={tmp_path / 'local'}"]):
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
                              cwd=Path(__file__).resolve().parents[1])
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "***" in errors[0] and "credentials" in errors[0], proc.stderr[-2000:]
        assert secret not in proc.stdout + proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert written == []
    endpoint = query.split("endpoint_override=")[1].split("&")[0]
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
    stored = fs.get_file_info(pafs.FileSelector(BUCKET, recursive=True, allow_not_found=True))
    run_prefix = f"{BUCKET}/runs/r"
    assert not [i.path for i in stored
                if i.path == run_prefix or i.path.startswith(run_prefix + "/") or secret in i.path]


def test_predict_reads_a_model_in_object_storage_as_load_model_does(tmp_path, monkeypatch, bucket, mbert_tokenizer):
    """A stage model published to the bucket from one node; predict on
    another node, given its URI, labels the corpus as the local folder does."""
    import json
    import shutil

    from test_hf_predict import trained_like

    from conlst_ray.commands import predict

    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls", labels=("negative", "positive"), kind="single")
    uri = storage.join(bucket, "r9", "ssl", "model")
    node(monkeypatch, tmp_path / "a")
    shutil.copytree(model_dir, storage.mirror(uri))
    storage.publish(storage.mirror(uri))
    corpus = tmp_path / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("great phone", "broke after a day")))
    node(monkeypatch, tmp_path / "b")
    for model, out in ((uri, tmp_path / "remote.csv"), (str(model_dir), tmp_path / "local.csv")):
        assert predict.main([model, "--corpus", f"jsonl:{corpus}", "--out", str(out)]) == 0
    assert (tmp_path / "remote.csv").read_text() == (tmp_path / "local.csv").read_text()
