"""Run a small search on a two-node Ray cluster started in this process and
record which node every training worker and inference actor ran on.

Used by tests/test_two_node.py in a subprocess of its own, so that its
cluster does not meet the Ray instance the rest of the test session shares.

    python tests/two_node_job.py OUT_DIR   ->  OUT_DIR/placement.json
"""

import json
import socket
import sys
from pathlib import Path

# Each node has 3 logical CPUs and every trial (its stages run in its own
# process: one worker, no GPU) and inference actor asks for 2, so no node can
# hold two of them: two trials running at once, or the two actors of the
# pseudo-labelling pool, must sit on different nodes.
NODE_CPUS = 3
ARGS = ["--smoke-test", "--num-samples", "2", "run_name=s",
        "resources.num_workers=1", "resources.cpus_per_worker=2",
        "resources.inference_actors=2", "resources.cpus_per_actor=2",
        "tune.max_concurrent_trials=2",
        # the search runs on the embedded benchmark's single-text 5-class variant:
        # the Tune path is task-agnostic, and the NLI default is run by test_run
        "data.task.kind=single", "data.task.labels=[very_bad, bad, mixed, good, very_good]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out: Path) -> int:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from conlst_ray.commands import tune as tune_cli

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": NODE_CPUS, "include_dashboard": True,
        "dashboard_port": free_port()})  # the session's own Ray may hold the default port
    cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        rc = tune_cli.main(ARGS + [f"output_dir={out}", "--address", cluster.address])
        actors = list_actors(address=cluster.address, detail=True, limit=10_000, raise_on_missing_output=False)
        placed = [a for a in actors if a.node_id]  # an actor still pending when its job ended has no node
        trials = (out / "tune" / "s-trials").glob("trial_*/trial.json")
        placement = {"rc": rc, "nodes": nodes,
                     "trials": sorted({json.loads(t.read_text())["node"] for t in trials}),
                     "inference_actors": sorted({a.node_id for a in placed if "Predictor" in a.class_name})}
        (out / "placement.json").write_text(json.dumps(placement, indent=1))
        return rc
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
