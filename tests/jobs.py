"""The suite's end-to-end jobs (see background.py): each takes its own
folder and returns what its tests assert on. Fixtures of the same names in
conftest.py hand them to the tests."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from background import RUNNER

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "tests"
# a run's command with SIGINT's default disposition, as a terminal delivers it, whatever this test
# runner inherited: a process started with SIGINT ignored (a shell script's background job,
# pytest-xdist's workers) keeps ignoring it, as every Python program does (measured: rc 0 after a SIGINT)
SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
# a small run on the embedded benchmark (one target language)
TINY = ["data.synthetic.n_source_train=300", "data.synthetic.n_unlabelled=100", "data.synthetic.n_dev=60",
        "data.synthetic.n_test=60", "source.epochs=1", "ssl.iterations=1", "data.target_langs=[near]"]


STAGES = ("source", "pseudo_labels", "conl", "ssl")


def run_cmd(*args) -> list[str]:
    return [sys.executable, "-c", SIGINT_DEFAULT, "-m", "conlst_ray.run", *args]


def wait_for(path: Path, proc, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)


@RUNNER.register("interrupted_run")
def interrupted_run(out: Path) -> dict:
    """Ctrl+C in every stage of one run, each time in a new command that
    resumes it, then a --resume to the end. While the first command works,
    a second command in the same run directory is refused; before the last,
    the lock a killed command would leave names a process that is gone."""
    args = ["data.synthetic.n_source_train=400", "data.synthetic.n_unlabelled=200", "data.synthetic.n_dev=60",
            "data.target_test=null", "data.eval_during_training=false", "source.epochs=4", "conl.epochs=4",
            "ssl.iterations=3", "data.target_langs=[near]", f"output_dir={out}", "run_name=r",
            "resources.driver_inference_rows=0"]  # pseudo-labelling as a Ray Data job: Ctrl+C in one too
    run = out / "r"
    seen: dict = {"run": str(run), "stages": {}}
    # Ray Train worker groups where Ray's own SIGINT handler was the problem (a stage, and the
    # pseudo-labelling after one); later stages in-process (workers are an execution setting);
    # CoNL once it trains, self-training as it starts
    for stage, marker, trainer in (("source", "source/steps.jsonl", "ray_train"),
                                   ("pseudo_labels", "pseudo_labels/FINGERPRINT.json", "ray_train"),
                                   ("conl", "conl/steps.jsonl", "auto"), ("ssl", "ssl/FINGERPRINT.json", "auto")):
        resume = ["--resume"] if stage != "source" else []
        proc = RUNNER.popen(run_cmd(*args, f"resources.trainer={trainer}", *resume),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
        if stage == "source":  # a second command while the first holds the run directory
            wait_for(run / ".lock", proc, 120)
            seen["first_pid"], seen["locked"] = proc.pid, (run / ".lock").exists()
            second = RUNNER.run(run_cmd(*args, "--resume"), timeout=120, cwd=REPO)
            seen["second"] = {"rc": second.returncode, "stderr": second.stderr}
        wait_for(run / marker, proc, 240)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        seen["stages"][stage] = {"running_at_sigint": still_running, "rc": proc.returncode, "stderr": err,
                                 "done": (run / stage / "DONE.json").exists(), "lock_left": (run / ".lock").exists()}
    gone = RUNNER.run([sys.executable, "-c", "import os; print(os.getpid())"], timeout=60)
    (run / ".lock").write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(), "started": 0}))
    done = RUNNER.run(run_cmd(*args, "--resume", "resources.num_workers=0"), timeout=600, cwd=REPO)
    seen["resume"] = {"rc": done.returncode, "stderr": done.stderr, "lock_left": (run / ".lock").exists(),
                      "done": [s for s in STAGES if (run / s / "DONE.json").is_file()],
                      "results": (run / "results" / "accuracy_dev.md").is_file()}
    return seen


# each finished training stage -> what is wrong with its model (RunDir.damage), run inside the
# namespace that holds the disk
_DONE_CHECK = ("import sys, pathlib; from conlst_ray.pipeline.rundir import RunDir; r = RunDir(pathlib.Path("
               "sys.argv[1])); print({s: r.damage(s) for s in ('source', 'conl', 'ssl') if r.is_done(s)})")


@RUNNER.register("full_disk_run")
def full_disk_run(out: Path) -> dict:
    """A run whose output_dir is a 2 MiB tmpfs (a private mount namespace),
    which the source model's weights do not fit; then, with the disk grown
    to 200 MiB, its --resume up to the stage the disk cut short."""
    from helpers import private_mounts  # imports torch: not before conftest.py has set its environment

    if not private_mounts():
        return {}  # its test is skipped
    disk, run = out / "disk", out / "disk" / "r"
    disk.mkdir()
    cmd = [sys.executable, "-m", "conlst_ray.run", *TINY, f"output_dir={disk}", "run_name=r"]
    check = shlex.join([sys.executable, "-c", _DONE_CHECK, str(run)])
    script = (f"mount -t tmpfs -o size=2m tmpfs {disk} || exit 99\n"
              f"{shlex.join(cmd)} 2> {out / 'full.err'}; echo $? > {out / 'full.rc'}\n"
              f"{check} > {out / 'after_full'}\n"
              f"mount -o remount,size=200m {disk}\n"
              f"{shlex.join(cmd + ['--resume', '--stop-after', 'source'])} 2> {out / 'resume.err'}\n"
              f"echo $? > {out / 'resume.rc'}; {check} > {out / 'after_resume'}\n")
    proc = RUNNER.run(["unshare", "-rm", "sh", "-c", script], timeout=600, cwd=REPO)
    read = lambda name: (out / name).read_text() if (out / name).is_file() else ""  # noqa: E731
    return {"rc": proc.returncode, "stderr": proc.stderr, "run": str(run), "full_rc": read("full.rc").strip(),
            "full_err": read("full.err"), "after_full": read("after_full").strip(),
            "resume_rc": read("resume.rc").strip(), "resume_err": read("resume.err"),
            "after_resume": read("after_resume").strip()}


@RUNNER.register("quick_study")
def quick_study(out: Path) -> dict:
    """experiments/study.py at one seed, quick, with one ablation variant."""
    nl_only = "w/o contrastive learning (NL with cross-entropy)"
    proc = RUNNER.run([sys.executable, "-m", "experiments.study", "--seeds", "0", "--quick", "--out",
                       str(out / "runs"), "--docs", str(out / "docs"), "--variants", nl_only], timeout=900, cwd=REPO)
    return {"rc": proc.returncode, "log": proc.stdout[-3000:] + proc.stderr[-3000:], "docs": str(out / "docs"),
            "variant": nl_only}


@RUNNER.register("storage_job")
def storage_job(out: Path) -> dict:
    """tests/storage_job.py: the pipeline on two nodes through an S3 server."""
    proc = RUNNER.run([sys.executable, str(HERE / "storage_job.py"), str(out)], timeout=900, cwd=REPO)
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else {}
    return {"rc": proc.returncode, "log": proc.stdout[-3000:] + proc.stderr[-3000:], "out": str(out),
            "result": result}


@RUNNER.register("two_node_search")
def two_node_search(out: Path) -> dict:
    """tests/two_node_job.py: a 2-trial smoke search on a two-node cluster."""
    import os

    # Clients that join a token-authenticated cluster by address need the mode set.
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           # Ray Data starts a pool's actors asynchronously: on a loaded machine a
           # small corpus can be labelled before the second actor is placed. Wait for both.
           "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"}
    proc = RUNNER.run([sys.executable, str(HERE / "two_node_job.py"), str(out)], timeout=900, env=env, cwd=REPO)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "out": str(out)}


@RUNNER.register("unshared_node")
def unshared_node(out: Path) -> dict:
    """tests/unshared_node_job.py: a node that cannot see a local output_dir."""
    from helpers import private_mounts

    if not private_mounts():
        return {}  # its test is skipped
    proc = RUNNER.run([sys.executable, str(HERE / "unshared_node_job.py"), str(out)], timeout=300, cwd=REPO)
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else {}
    return {"rc": proc.returncode, "stderr": proc.stderr, "result": result, "out": str(out)}
