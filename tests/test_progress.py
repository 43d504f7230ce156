"""What the driver shows while a Ray Train stage runs: progress lines and
TensorBoard events, read from the stage's steps.jsonl / metrics.jsonl."""

import json

from conlst_ray.pipeline.rundir import stage_files
from conlst_ray.ray_jobs.progress import StageWatcher


def test_the_watcher_prints_progress_and_writes_tensorboard_events(tmp_path):
    from tensorboard_reader import scalars

    lines = []
    steps, metrics = tmp_path / "steps.jsonl", tmp_path / "metrics.jsonl"
    watcher = StageWatcher(stage_files(tmp_path), "ssl", epochs=2, interval=0.0, log=lines.append)
    with steps.open("w") as fh:
        for step in range(1, 4):
            fh.write(json.dumps({"iteration": 0, "step": step, "epoch_steps": 10, "loss": 1.0 / step,
                                 "selected_rate": 0.5}) + "\n")
        fh.write('{"iteration": 0, "st')                        # a line still being written
    watcher.poll()
    assert lines[-1].startswith("[ssl] iteration 1/2 step 3/10 (30%)") and "ETA" in lines[-1]
    assert "loss 0.3333" in lines[-1] and "selected_rate 0.5" in lines[-1]
    with steps.open("a") as fh:
        fh.write('ep": 4, "epoch_steps": 10, "loss": 0.2}\n')     # ... and finished: read once, whole
    metrics.write_text(json.dumps({"epoch": 0, "step": 4, "source_dev_acc": 0.9, "selected_share": 0.5}) + "\n")
    watcher.poll()
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
