"""A two-node Ray cluster on one machine where the second node does not see
one local folder: it runs in its own user and mount namespace
(``unshare -rm``) with an empty tmpfs mounted over that folder -- what a
node of a real cluster sees of the head node's local disk.

Used by tests/test_object_storage.py in a subprocess of its own:

    python tests/unshared_node_job.py OUT_DIR   ->  OUT_DIR/result.json
    (stderr: what ``python -m conlst_ray.run`` said)
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(out: Path) -> int:
    import ray
    from ray.cluster_utils import Cluster

    hidden, visible = out / "head-local", out / "shared"
    hidden.mkdir(parents=True, exist_ok=True)
    visible.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    ray_bin = Path(sys.executable).with_name("ray")
    node = subprocess.Popen(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs none {hidden} && exec {ray_bin} start "
                             f"--address={cluster.address} --num-cpus=1 --block"],
                            stdout=open(out / "node.log", "w"), stderr=subprocess.STDOUT)
    result: dict = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.time() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
            time.sleep(0.5)
        result["nodes"] = sum(n["Alive"] for n in ray.nodes())
        from conlst_ray.commands import run as run_cli
        from conlst_ray.config import load_config
        from conlst_ray.pipeline.preflight import check_shared_output

        result["rc"] = run_cli.main([f"output_dir={hidden / 'runs'}", "run_name=r", "--address", cluster.address])
        result["left_behind"] = sorted(os.listdir(hidden))
        check_shared_output(load_config(None, [f"output_dir={visible / 'runs'}"]))  # raises if refused
        result["visible_accepted"] = True
    finally:
        (out / "result.json").write_text(json.dumps(result))
        ray.shutdown()
        node.terminate()
        node.wait(30)
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
