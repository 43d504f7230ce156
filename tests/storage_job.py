"""The pipeline on a two-node Ray cluster whose nodes share no run files:
artefacts in an S3-compatible server (moto, started here on localhost),
each node (and the driver) with a cache root of its own.

Used by tests/test_object_storage.py in a subprocess of its own (its
cluster must not meet the Ray instance the rest of the session shares):

    python tests/storage_job.py OUT_DIR   ->  OUT_DIR/result.json

Every process of the job appends to OUT/storage.log what it fetched and
published (``CONLST_RAY_STORAGE_LOG``), and every Ray worker process runs a
Python audit hook that records any file it opens or lists under the
driver's cache root (OUT/driver) in OUT/forbidden.log.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # faults.py

NODE_CPUS = 3  # Ray Train workers and actors ask for 2: one per node, 1 CPU left for tasks
BUCKET = "conlst-test"
SMALL = ["seed=0", "data.synthetic.n_source_train=256", "data.synthetic.n_unlabelled=96", "data.synthetic.n_dev=60",
         "data.target_langs=[near,far]", "source.batch_size=32", "source.epochs=1", "conl.source_batch_size=16",
         "ssl.batch_size=16", "ssl.iterations=1", "data.shard_rows=48",
         "resources.cpus_per_worker=2", "resources.inference_actors=2", "resources.cpus_per_actor=2",
         "resources.max_failures=1"]
# The pipeline's stages train in the driver (one worker): both nodes still read from storage through the
# pseudo-labelling actors and the corpus tasks; the killed-worker stage below is a Ray Train group across them.
PIPELINE = ["resources.num_workers=1"]
KILLED_STAGE_WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3(out: Path):
    """moto's S3 server on a free localhost port; returns (process, endpoint)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(out / "moto.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def audit_hook(forbidden_root: str, log_path: str):
    """A worker_process_setup_hook: log every open/listdir under the driver's root."""

    def install():
        def hook(event, args):
            if event in ("open", "os.listdir", "os.scandir") and args and str(args[0]).startswith(forbidden_root):
                with open(log_path, "a") as fh:  # not under forbidden_root: no recursion
                    fh.write(f"{os.getpid()} {event} {args[0]}\n")

        sys.addaudithook(hook)

    return install


def s3_files(fs, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
                  if i.type == pafs.FileType.File)


def kill_and_resume(out_dir: str, run: str, driver_root: Path, out: Path) -> dict:
    """A source stage whose last worker dies in its second epoch: the group
    restarts from the epoch-1 checkpoint in storage."""
    from faults import KillOnce

    from conlst_ray.config import load_config
    from conlst_ray.pipeline.rundir import stage_files
    from conlst_ray.ray_jobs.train import fit_stage
    from conlst_ray.ray_jobs.worker import StageInputs
    from conlst_ray.storage import mirror as storage

    cfg = load_config(None, SMALL + [f"output_dir={out_dir}", "source.epochs=2"])
    stage_dir = storage.mirror(storage.join(out_dir, run, "killed"))
    init = storage.mirror(storage.join(out_dir, run, "init", "model"))
    marker = out / "killed"
    metrics = fit_stage("source", cfg, stage_files(stage_dir), str(init),
                        StageInputs(corpus_dir=str(stage_dir.parent / "corpus"),
                                    before_step=KillOnce(step=11, marker=str(marker), after_s=5.0)),
                        num_workers=KILLED_STAGE_WORKERS)
    steps = [json.loads(line) for line in storage.fetch(stage_dir / "steps.jsonl").read_text().splitlines()]
    return {"killed": marker.exists(), "killed_at": marker.stat().st_mtime if marker.exists() else None,
            "final_step": metrics.get("step"), "steps": [[r["step"], r["time"]] for r in steps],
            "stage_dir_is_remote": storage.is_remote(stage_dir), "driver_root": str(driver_root)}


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    s3, endpoint = start_s3(out)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      CONLST_RAY_STORAGE_LOG=str(out / "storage.log"))
    driver_root, nodes = out / "driver", {"head": out / "node-head", "worker": out / "node-worker"}
    os.environ["CONLST_RAY_CACHE_DIR"] = str(driver_root)
    import pyarrow.fs as pafs
    import ray
    from ray.cluster_utils import Cluster

    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    out_dir = f"s3://{BUCKET}/runs?endpoint_override={endpoint}&scheme=http"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": NODE_CPUS, "include_dashboard": False, "env_vars": {"CONLST_RAY_CACHE_DIR": str(nodes["head"])}})
    cluster.add_node(num_cpus=NODE_CPUS, env_vars={"CONLST_RAY_CACHE_DIR": str(nodes["worker"])})
    cluster.wait_for_nodes()
    result: dict = {"driver_pid": os.getpid(), "nodes": {k: str(v) for k, v in nodes.items()}}
    try:
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={
            "worker_process_setup_hook": audit_hook(str(driver_root), str(out / "forbidden.log"))})
        from conlst_ray.commands import run as run_cli

        t0 = time.time()
        result["rc"] = run_cli.main(SMALL + PIPELINE + [f"output_dir={out_dir}", "run_name=r",
                                                        "--address", cluster.address])
        result["pipeline_s"] = time.time() - t0
        result["files"] = [p[len(BUCKET) + 1:] for p in s3_files(fs, f"{BUCKET}/runs")]
        if result["rc"] == 0:
            result["restart"] = kill_and_resume(out_dir, "r", driver_root, out)
            result["restart_checkpoints"] = [p for p in s3_files(fs, f"{BUCKET}/runs/r/killed/ray_train")
                                             if p.endswith("train_state.pt")]
    finally:
        (out / "result.json").write_text(json.dumps(result, indent=1))
        ray.shutdown()
        cluster.shutdown()
        s3.kill()
    return 0 if result.get("rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
