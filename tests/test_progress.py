"""What the driver shows while a Ray Train stage runs: progress lines and
TensorBoard events, read from the stage's steps.jsonl / metrics.jsonl."""

import json

from helpers import logged

from conlst_ray.pipeline.rundir import stage_files
from conlst_ray.ray_jobs.progress import StageWatcher


def test_the_watcher_prints_progress_and_writes_tensorboard_events(tmp_path):
    from tensorboard_reader import scalars

    steps, metrics = tmp_path / "steps.jsonl", tmp_path / "metrics.jsonl"
    watcher = StageWatcher(stage_files(tmp_path), "ssl", epochs=2, interval=0.0)
    with steps.open("w") as fh:
        for step in range(1, 4):
            fh.write(json.dumps({"iteration": 0, "step": step, "epoch_steps": 10, "loss": 1.0 / step,
                                 "selected_rate": 0.5}) + "\n")
        fh.write('{"iteration": 0, "st')                        # a line still being written
    with logged() as lines:
        watcher.poll()
    assert lines[-1].startswith("[ssl] iteration 1/2 step 3/10 (30%)") and "ETA" in lines[-1]
    assert "loss 0.3333" in lines[-1] and "selected_rate 0.5" in lines[-1]
    with steps.open("a") as fh:
        fh.write('ep": 4, "epoch_steps": 10, "loss": 0.2}\n')     # ... and finished: read once, whole
    metrics.write_text(json.dumps({"epoch": 0, "step": 4, "source_dev_acc": 0.9, "selected_share": 0.5}) + "\n")
    with logged() as more:
        watcher.poll()
    lines += more
    assert any("step 4/10" in line for line in lines)
    assert lines[-1] == "[ssl] iteration 1/2 done at step 4: source dev 90.0 %, selected 50.0 %"
    watcher.tb.close()
    found = scalars(tmp_path / "tensorboard")
    assert found["ssl/loss"] == [(1, 1.0), (2, 0.5), (3, 0.333333), (4, 0.2)]
    assert found["ssl/epoch/source_dev_acc"] == [(4, 0.9)]


def test_a_term_a_step_could_not_compute_is_left_out_of_tensorboard_without_a_warning(tmp_path, capfd):
    """CoNL logs NaN for L_CL on a batch without negatives: TensorBoard gets
    the finite terms only, and nothing is printed for the NaN."""
    from tensorboard_reader import scalars

    from conlst_ray.ray_jobs.progress import TensorBoard

    tb = TensorBoard(tmp_path / "tb", "conl")
    tb.step(1, {"loss": 0.5, "loss_cl": float("nan")})
    tb.step(2, {"loss": 0.4, "loss_cl": 0.3})
    tb.close()
    found = scalars(tmp_path / "tb")
    assert found["conl/loss"] == [(1, 0.5), (2, 0.4)] and found["conl/loss_cl"] == [(2, 0.3)]
    captured = capfd.readouterr()
    assert "NaN or Inf" not in captured.out + captured.err


def test_a_resumed_stage_shows_only_its_own_epochs(tmp_path):
    """The epochs a killed or stopped command finished were shown by it: the
    resume prints only the epochs and steps it adds, also after the worker
    cut the log back to its checkpoint."""
    steps, metrics = tmp_path / "steps.jsonl", tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "step": 4 * (e + 1)}) + "\n" for e in range(2)))
    steps.write_text("".join(json.dumps({"epoch": 2, "step": s, "epoch_steps": 4}) + "\n" for s in (9, 10)))
    watcher = StageWatcher(stage_files(tmp_path), "conl", epochs=3, interval=0.0, tensorboard=False)
    steps.write_text("")                                        # the restored checkpoint is at step 8
    with steps.open("a") as fh:
        for step in (9, 10, 11):
            fh.write(json.dumps({"epoch": 2, "step": step, "epoch_steps": 4}) + "\n")
    with metrics.open("a") as fh:
        fh.write(json.dumps({"epoch": 2, "step": 12}) + "\n")
    with logged() as lines:
        watcher.poll()
    assert [line for line in lines if "done at" in line] == ["[conl] epoch 3/3 done at step 12"]
    progress = [line for line in lines if "done at" not in line]
    assert len(progress) == 1 and progress[0].startswith("[conl] epoch 3/3 step "), lines  # step 11 alone


def test_a_full_disk_stops_the_tensorboard_files_with_one_line_and_never_blocks(tmp_path):
    """A real full disk (a 64 KiB tmpfs in a private mount namespace): the
    writes go on returning, and one line says the event files stopped."""
    import subprocess
    import sys

    from helpers import private_mounts

    if not private_mounts():
        import pytest

        pytest.skip("needs unshare -rm (user namespaces) to mount a small tmpfs")
    script = ("import sys\nfrom conlst_ray import message_prefix\n"
              "from conlst_ray.ray_jobs.progress import TensorBoard\n"
              "with message_prefix('LINE '):\n"
              "    tb = TensorBoard(sys.argv[1], 'conl')\n"
              "    tb.FLUSH_S = 0\n"
              "    for step in range(20000): tb.step(step, {'loss': 0.5, 'loss_cl': 0.25})\n"
              "    tb.close()\n"
              "print('returned')\n")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1" && '
                           'exec "$2" -c "$3" "$1"', "sh", str(disk), sys.executable, script],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith("LINE")]
    assert len(said) == 1 and "[conl] TensorBoard event files stopped" in said[0] and "No space left" in said[0]
    assert proc.stdout.splitlines()[-1] == "returned"


def test_a_per_language_run_tags_the_lines_its_watcher_thread_prints(tmp_path, capsys):
    """Per-language mode prefixes every line with its language; the watcher
    prints from its own thread, and its lines carry the tag all the same."""
    import time

    from conlst_ray import message_prefix

    with message_prefix("[fr] "):
        watcher = StageWatcher(stage_files(tmp_path), "conl", epochs=1, interval=0.0, tensorboard=False)
    out = ""
    with watcher:                        # outside the block: only the thread can know the tag
        (tmp_path / "steps.jsonl").write_text(json.dumps({"epoch": 0, "step": 1, "epoch_steps": 2}) + "\n")
        deadline = time.monotonic() + 30
        while "step 1/2" not in out and time.monotonic() < deadline:
            time.sleep(0.1)
            out += capsys.readouterr().out
    line = next(line for line in out.splitlines() if "step 1/2" in line)
    assert line.startswith("[fr] [conl] epoch 1/1 step 1/2"), out
