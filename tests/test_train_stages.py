"""Ray Train stages on the embedded benchmark (small sizes): in-process unit
runs, 1 vs 2 workers at the same global batch, recovery from a killed worker."""

import csv
import json

import numpy as np
import pytest
from faults import KillOnce

from conlst_ray.config import load_config
from conlst_ray.models.encoder import build_model, build_tokenizer
from conlst_ray.pipeline.rundir import stage_files
from conlst_ray.ray_jobs.train import fit_stage
from conlst_ray.ray_jobs.worker import StageInputs

pytestmark = pytest.mark.slow

SMALL = ["data.synthetic.n_source_train=256", "data.synthetic.n_unlabelled=96", "data.synthetic.n_dev=60",
         "data.target_langs=[near,far]", "source.batch_size=32", "source.epochs=2", "model.dropout=0.0",
         "resources.cpus_per_worker=0.5"]


def init_model(tmp_path, cfg):
    import torch

    torch.manual_seed(cfg.seed)  # the head's initialisation: the same model in every test run
    tok = build_tokenizer(cfg.model, cfg.data)
    return str(build_model(cfg.model, tok).save(tmp_path / "init", tok))


def steps(stage_dir):
    return [json.loads(line) for line in (stage_dir / "steps.jsonl").read_text().splitlines()]


def test_source_stage_in_process(tmp_path, ray_session):
    cfg = load_config(None, SMALL)
    metrics = fit_stage("source", cfg, stage_files(tmp_path / "source"), init_model(tmp_path, cfg), num_workers=0)
    assert (tmp_path / "source" / "model" / "model.safetensors").is_file()
    log = steps(tmp_path / "source")
    assert len(log) == 2 * (256 // 32) and log[-1]["step"] == 16
    assert np.mean([r["loss"] for r in log[-4:]]) < np.mean([r["loss"] for r in log[:4]])
    assert metrics["epoch"] == 1 and 0 <= metrics["target_dev_acc"] <= 1


class FailOnce:
    """Raises once before optimizer step ``step``: the in-process stage dies
    with its process's caller, as a Ctrl+C or a crash would stop it."""

    def __init__(self, step: int):
        self.step, self.failed = step, False

    def __call__(self, step: int) -> None:
        if step == self.step and not self.failed:
            self.failed = True
            raise RuntimeError("injected failure")


def test_one_cpu_worker_trains_in_process_and_a_rerun_resumes_from_its_checkpoint(tmp_path, monkeypatch, ray_session):
    """resources.trainer=auto with one worker and no GPU: no Ray Train (a
    TorchTrainer built here fails the test), the epoch's checkpoint is a file in
    the stage folder, and a rerun after a failure in epoch 2 restores epoch 1:
    it ends at the same step, runs the lost steps once more and logs each step once."""
    import ray.train.torch

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", None)  # any use of Ray Train would raise TypeError
    cfg = load_config(None, SMALL)
    init, stage_dir = init_model(tmp_path, cfg), tmp_path / "source"
    fail = FailOnce(step=10)  # before the 11th optimizer step, in epoch 2
    with pytest.raises(RuntimeError, match="injected failure"):
        fit_stage("source", cfg, stage_files(stage_dir), init, StageInputs(before_step=fail), num_workers=1)
    assert (stage_dir / "checkpoint" / "train_state.pt").is_file() and not (stage_dir / "ray_train").exists()
    assert [r["step"] for r in steps(stage_dir)] == list(range(1, 11))
    first_run = {r["step"]: r["time"] for r in steps(stage_dir)}
    metrics = fit_stage("source", cfg, stage_files(stage_dir), init, StageInputs(before_step=fail), num_workers=1)
    log = steps(stage_dir)
    assert metrics["step"] == 16 and [r["step"] for r in log] == list(range(1, 17))
    assert all(r["time"] == first_run[r["step"]] for r in log if r["step"] <= 8)   # epoch 1 restored, not redone
    assert all(r["time"] > max(first_run.values()) for r in log if r["step"] > 8)
    assert (stage_dir / "model" / "model.safetensors").is_file()


def test_trials_hold_the_cpus_of_the_stages_they_run_in_process():
    from conlst_ray.ray_jobs.tune import DRIVER_RESOURCES, trial_resources

    assert trial_resources(load_config(None, ["resources.cpus_per_worker=2"])) == {"cpu": 2.0}
    assert trial_resources(load_config(None, ["resources.num_workers=2"])) == DRIVER_RESOURCES
    assert trial_resources(load_config(None, ["resources.trainer=ray_train"])) == DRIVER_RESOURCES


def test_keep_best_epoch_hands_on_the_epoch_with_the_best_source_dev_accuracy(tmp_path, ray_session):
    from conlst_ray.reporting.report import evaluate

    cfg = load_config(None, SMALL + ["source.keep_best_epoch=true", "source.epochs=3"])
    fit_stage("source", cfg, stage_files(tmp_path / "source"), init_model(tmp_path, cfg), num_workers=0)
    records = [json.loads(line) for line in (tmp_path / "source" / "metrics.jsonl").read_text().splitlines()]
    accs = [r["source_dev_acc"] for r in records]
    assert [r["best_source_dev_acc"] for r in records] == list(np.maximum.accumulate(accs))
    kept = [r["epoch"] for r in records if "kept_epoch" in r]
    assert kept[0] == 0 and kept[-1] == int(np.argmax(accs))
    assert evaluate(cfg, str(tmp_path / "source" / "model"), "dev")["src"] == max(accs)


def test_best_epoch_saves_only_improvements_and_survives_a_restart():
    from conlst_ray.training.loop import KeepBestEpoch

    class Model:
        saved = []

        def save(self, out, tokenizer, card=None):
            self.saved.append(self.epoch)

    cfg = load_config(None, ["source.keep_best_epoch=true"])
    model = Model()
    best = KeepBestEpoch(model, cfg, "unused", None)
    for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.7]):
        model.epoch = epoch
        best.after_epoch(epoch, 0, {"source_dev_acc": acc})
    assert Model.saved == [0, 1] and best.kept and best.acc == 0.7
    restarted = KeepBestEpoch(model, cfg, "unused", None, restored_acc=0.7)
    model.epoch = 4
    record = {"source_dev_acc": 0.65}
    restarted.after_epoch(4, 0, record)
    assert Model.saved == [0, 1] and restarted.kept      # the model on disk is still epoch 1's
    assert record["best_source_dev_acc"] == 0.7 and "kept_epoch" not in record


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, ray_session):
    """A source model, the sharded target corpus and its pseudo-labels."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    root = tmp_path_factory.mktemp("stages")
    cfg = load_config(None, SMALL + ["conl.batch_size=32", "conl.source_batch_size=16", "ssl.batch_size=16",
                                     "ssl.iterations=2", "ssl.threshold=0.6"])
    fit_stage("source", cfg, stage_files(root / "source"), init_model(root, cfg), num_workers=0)
    corpus = root / "corpus"
    manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, corpus, cfg.data)
    pseudo_label(str(root / "source" / "model"), CachedCorpus(corpus, manifests), root / "pl", cfg)
    return cfg, root


def conl(cfg, root, name, overrides=(), workers=0):
    from conlst_ray.config import load_config as lc

    cfg2 = lc(None, SMALL + ["conl.batch_size=32", "conl.source_batch_size=16"] + list(overrides))
    fit_stage("conl", cfg2, stage_files(root / name), str(root / "source" / "model"),
              StageInputs(target_corpus=str(root / "corpus"), pseudo_labels=str(root / "pl")), num_workers=workers)
    return steps(root / name)


def test_conl_stage_and_its_ablation_switches(source_run):
    cfg, root = source_run
    full = conl(cfg, root, "conl")
    assert len(full) == (2 * 96) // 32                          # one epoch over all target anchors
    assert {"loss_cl", "loss_clcs"} <= set(full[0]) and "loss_nl_target" not in full[0]
    assert all(abs(r["loss"] - (r["loss_cl"] + 0.001 * r["loss_clcs"])) < 1e-4 for r in full)  # Eq. 8
    no_clcs = conl(cfg, root, "conl_no_clcs", ["conl.use_clcs=false"])
    assert "loss_clcs" not in no_clcs[0] and "loss_cl" in no_clcs[0]
    no_cl = conl(cfg, root, "conl_no_cl", ["conl.use_contrastive=false"])
    assert "loss_nl_target" in no_cl[0] and "loss_cl" not in no_cl[0]
    assert (root / "conl" / "model" / "model.safetensors").is_file()


def ssl(cfg, root, name, overrides=(), workers=0):
    from conlst_ray.config import load_config as lc

    cfg2 = lc(None, SMALL + ["ssl.batch_size=16", "ssl.iterations=2", "ssl.threshold=0.34"] + list(overrides))
    metrics = fit_stage("ssl", cfg2, stage_files(root / name), str(root / "source" / "model"),
                        StageInputs(target_corpus=str(root / "corpus")), num_workers=workers)
    return steps(root / name), metrics


def test_ssl_stage_iterations_thresholds_and_switches(source_run):
    cfg, root = source_run
    log, metrics = ssl(cfg, root, "ssl")
    assert {r["iteration"] for r in log} == {0, 1}
    # one strong view per row, among masking and mixup (no translations here)
    assert all(r["aug_backtranslation"] == 0.0 for r in log)
    assert all(abs(r["aug_masking"] + r["aug_mixup"] - 1.0) < 1e-6 for r in log)
    assert any("mixup_lambda" in r for r in log)
    assert all(abs(r["loss"] - (r["loss_sup"] + r["loss_u"])) < 1e-4 for r in log)   # Eq. 12, lambda_u = 1
    assert 0 < metrics["selected_share"] <= 1
    thresholds = json.loads((root / "ssl" / "thresholds" / "iter1.rank0.json").read_text())
    assert len(thresholds) == 3 and all(0 <= t <= 0.34 + 1e-6 for t in thresholds)
    no_mix, _ = ssl(cfg, root, "ssl_no_mixup", ["ssl.use_mixup=false", "ssl.use_masking=false"])
    assert "mixup_lambda" not in no_mix[0] and no_mix[0]["aug_masking"] == 0.0


def test_ssl_schedule_reaches_zero_each_iteration_and_epochs_count(source_run):
    """The rate is sized by the steps that run: it ends at 0 at each
    iteration's last step, and ssl.epochs_per_iteration multiplies the steps."""
    cfg, root = source_run
    one, m1 = ssl(cfg, root, "ssl_e1", ["ssl.thresholding=fixed", "ssl.threshold=0.34"])
    two, m2 = ssl(cfg, root, "ssl_e2", ["ssl.thresholding=fixed", "ssl.threshold=0.34", "ssl.epochs_per_iteration=2"])
    for log in (one, two):
        for it in (0, 1):
            rates = [r["lr"] for r in log if r["iteration"] == it]
            assert rates[-1] == 0.0 and max(rates) > 0
    per_iter = lambda log, it: sum(r["iteration"] == it for r in log)  # noqa: E731
    assert per_iter(one, 0) > 0 and per_iter(two, 0) == 2 * per_iter(one, 0)


def test_two_workers_follow_one_workers_loss_trajectory_through_a_killed_worker(source_run, tmp_path):
    """Same global batch (32): 1 worker x 32 rows vs 2 workers x 16 rows, DDP
    averaging the gradients. Dropout is off so both see the same function.
    One of the two workers dies in the second epoch (step 11 of 16): the
    group restarts from the epoch-1 checkpoint, ends at the same optimizer
    step, steps.jsonl holds each step once (the replayed ones are not
    duplicated), and the losses still agree with the one worker's to 1e-3
    relative (float reduction order only): the restart resumes the run, it
    does not merely finish it."""
    cfg, root = source_run
    init = init_model(tmp_path, cfg)
    fit_stage("source", cfg, stage_files(tmp_path / "w1"), init, num_workers=1)
    marker = tmp_path / "failed"
    metrics = fit_stage("source", cfg, stage_files(tmp_path / "w2"), init,
                        StageInputs(before_step=KillOnce(step=11, marker=str(marker), after_s=5.0)), num_workers=2)
    assert marker.exists()                                   # the failure did happen
    one, two = steps(tmp_path / "w1"), steps(tmp_path / "w2")
    assert metrics["step"] == 16                             # same count as uninterrupted
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 17))  # each step once
    failed_at = marker.stat().st_mtime
    # epoch 1 was not redone (restored from its checkpoint); epoch 2 ran again after the failure
    assert all(r["time"] < failed_at for r in two if r["step"] <= 8)
    assert all(r["time"] > failed_at for r in two if r["step"] > 8)
    np.testing.assert_allclose([r["loss"] for r in one], [r["loss"] for r in two], rtol=1e-3)


def test_per_language_mode_runs_one_independent_target_run_each(tmp_path, ray_session):
    from conlst_ray.pipeline.rundir import RunDir
    from conlst_ray.pipeline.stages import run_pipeline

    cfg = load_config(None, SMALL + [f"output_dir={tmp_path}", "run_name=pl", "data.target_mode=per_language",
                                     "resources.num_workers=0", "source.epochs=1", "conl.source_batch_size=16",
                                     "ssl.batch_size=16", "ssl.iterations=1", "ssl.threshold=0.6"])
    models = run_pipeline(cfg, RunDir.create(cfg))
    assert set(models["CoNL"]) == set(models["CoNLST"]) == {"near", "far"}
    for lang in ("near", "far"):
        conl_steps = steps(tmp_path / "pl" / "targets" / lang / "conl")
        assert len(conl_steps) == 96 // 32                    # anchors of this language only
        assert (tmp_path / "pl" / "targets" / lang / "ssl" / "DONE.json").is_file()
    assert not (tmp_path / "pl" / "conl").exists()            # no joint run
    from conlst_ray.reporting.report import full_report

    table = full_report(cfg, RunDir(tmp_path / "pl"))  # models found on disk
    assert "| CoNLST |" in table and "nan" not in table
    # calibration: each language's own CoNL model relabels that language's rows
    with open(tmp_path / "pl" / "results" / "calibration.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["band"] == "all"]
    assert [(r["lang"], int(r["count_before"]), int(r["count_after"])) for r in rows] == [("near", 96, 96),
                                                                                     ("far", 96, 96)]


def test_ssl_uses_back_translations_and_the_switch_turns_them_off(tmp_path, shared_data, mbert_tokenizer,
                                                                 ray_session):
    """Real XNLI text (fr, de), the mBERT tokenizer, a tiny mBART for the
    back-translations: the SSL stage trains on them, or not when switched off."""
    import torch

    from conlst_ray.models.encoder import ConlstEncoder, tiny_bert
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.translate import CachedCorpus, TranslationJob, translate
    from tests.helpers import tiny_translation_model

    xnli = f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"
    base = [f"data.source_train={xnli.replace('{lang}', 'en')}", f"data.target_train={xnli}",
            "data.source_lang=en", "data.target_langs=[fr,de]", "data.source_dev=null", "data.target_dev=null",
            "data.target_test=null", "data.max_rows=64", "data.shard_rows=32", "model.tokenizer=null",
            "ssl.batch_size=16", "ssl.iterations=1", "ssl.threshold=0.34", "ssl.thresholding=fixed"]
    cfg = load_config(None, base)
    torch.manual_seed(0)
    model_dir = ConlstEncoder(tiny_bert(len(mbert_tokenizer), cfg.model.tiny)).save(tmp_path / "m", mbert_tokenizer)
    manifests = ingest_corpora(xnli, ["fr", "de"], tmp_path / "corpus", cfg.data)
    words = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").split()[:200]
    tr_cfg = load_config(None, [f"translation.model={tiny_translation_model(tmp_path / 'mt', 'mbart50', words)}",
                                "translation.max_new_tokens=8"]).translation
    translate(TranslationJob(tr_cfg, CachedCorpus(tmp_path / "corpus", manifests), tmp_path / "bt", "back"))
    for name, switch in (("with_bt", "ssl.use_backtranslation=true"), ("without_bt", "ssl.use_backtranslation=false")):
        cfg = load_config(None, base + [switch])
        fit_stage("ssl", cfg, stage_files(tmp_path / name), str(model_dir),
                  StageInputs(target_corpus=str(tmp_path / "corpus"), translations=str(tmp_path / "bt")), num_workers=0)
    with_bt, without_bt = steps(tmp_path / "with_bt"), steps(tmp_path / "without_bt")
    assert with_bt and np.mean([r["aug_backtranslation"] for r in with_bt]) > 0.2  # one view of three
    assert without_bt and all(r["aug_backtranslation"] == 0.0 for r in without_bt)


def test_no_stage_moves_the_model_off_the_worker_device(source_run, monkeypatch):
    """Every helper that runs the model (per-epoch evaluation, in-worker
    pseudo-labelling) uses the worker's device: a spy on ``.to()`` sees only
    the device Ray Train hands the loop. The worker device is made distinct
    from the helpers' default ('cpu') as ``cpu:0``, which a CPU build accepts."""
    import torch

    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.ray_jobs import train

    cfg, root = source_run
    worker_device = torch.device("cpu", 0)
    monkeypatch.setattr(train, "in_process_device", lambda cfg: worker_device)
    seen = []
    original = ConlstEncoder.to

    def spy(self, *args, **kwargs):
        seen.append(torch.device(args[0] if args else kwargs["device"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ConlstEncoder, "to", spy)
    fit_stage("source", cfg, stage_files(root / "device_source"), init_model(root / "device", cfg), num_workers=0)
    ssl(cfg, root, "device_ssl")
    assert seen and set(seen) == {worker_device}


def test_training_workers_never_tokenise_a_corpus(source_run, monkeypatch):
    """Every stage reads the token files made once by the driver's Ray tasks:
    a tokenizer called on rows inside the loop (here the loop runs in this
    process) fails the stage. The dev sets of the per-epoch evaluation too."""
    from transformers import PreTrainedTokenizerBase

    cfg, root = source_run
    assert cfg.data.eval_during_training
    calls = []

    def forbidden(self, *args, **kwargs):
        calls.append(args[:1])
        raise AssertionError("a training worker tokenised corpus rows")

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", forbidden)
    fit_stage("source", cfg, stage_files(root / "no_tok_source"), str(root / "source" / "model"),
              StageInputs(corpus_dir=str(root / "corpus")), num_workers=0)
    assert len(conl(cfg, root, "no_tok_conl")) == (2 * 96) // 32
    log, _ = ssl(cfg, root, "no_tok_ssl")
    assert log and calls == []
    # A stage's model keeps its input's tokenizer files verbatim, so the stages
    # share one tokenisation: the source rows tokenised for the source stage
    # (from the initial model) serve every later stage (from trained models).
    for corpus in ("source_train", "dev_source", "dev_target"):
        assert len(list((root / "corpus" / corpus).glob("tokens-*"))) == 1, corpus


def test_gradient_accumulation_trains_as_the_whole_batch(source_run, tmp_path):
    """grad_accum splits each worker's batch into micro-batches and steps
    once: the same losses step by step as without it (source and CoNL:
    per-row losses, no dropout), and self-training runs the same steps."""
    from conlst_ray.config import load_config as lc

    cfg, root = source_run
    init = init_model(tmp_path, cfg)
    for accum in (1, 4):
        fit_stage("source", lc(None, SMALL + ["source.epochs=1", f"source.grad_accum={accum}"]),
                  stage_files(tmp_path / f"src{accum}"), init, StageInputs(corpus_dir=str(root / "corpus")),
                  num_workers=0)
    whole, split = steps(tmp_path / "src1"), steps(tmp_path / "src4")
    assert len(whole) == len(split) == 256 // 32
    assert np.allclose([r["loss"] for r in whole], [r["loss"] for r in split], atol=1e-4)
    whole, split = conl(cfg, root, "conl_accum1"), conl(cfg, root, "conl_accum2", ["conl.grad_accum=2"])
    assert np.allclose([r["loss"] for r in whole], [r["loss"] for r in split], atol=1e-4)
    log, _ = ssl(cfg, root, "ssl_accum2", ["ssl.grad_accum=2"])
    plain, _ = ssl(cfg, root, "ssl_accum1")
    assert [r["step"] for r in log] == [r["step"] for r in plain]
    with pytest.raises(Exception, match="source.grad_accum=64"):
        fit_stage("source", lc(None, SMALL + ["source.grad_accum=64"]), stage_files(tmp_path / "too_many"), init,
                  StageInputs(corpus_dir=str(root / "corpus")), num_workers=0)


def test_two_workers_apply_identical_flexmatch_thresholds_and_stop_when_their_command_loses_the_run_directory(
        source_run):
    """Two self-training workers (one Ray Train group for both checks: a group
    costs about 20 s to start on 2 cores):

    - FlexMatch's per-class thresholds come from statistics reduced over the
      workers, so both apply the same ones in every iteration;
    - a command killed with kill -9 leaves its Ray Train workers training
      until Ray notices, and a prompt --resume takes its lock over: the
      orphans must not race it. Here another (living) process takes the lock
      over while the two workers train: they stop within seconds, before the
      stage's end, and the stage fails rather than restart."""
    import os
    import socket
    import subprocess
    import threading
    import time

    from conlst_ray.storage import lock as run_lock

    cfg, root = source_run
    run = root / "locked"  # the stage's run directory, whose lock its workers watch
    run_lock.acquire(run)
    ended: dict = {}

    def fit():
        try:
            ssl(cfg, root, "locked/ssl", ["ssl.iterations=30", "ssl.thresholding=flexmatch",
                                          "resources.max_failures=0"], workers=2)
        except BaseException as exc:  # noqa: BLE001 -- the test reads it
            ended["error"] = exc

    trainer = threading.Thread(target=fit)
    trainer.start()
    log, deadline = run / "ssl" / "steps.jsonl", time.time() + 300
    thresholds = run / "ssl" / "thresholds"

    def logged() -> int:
        return len(log.read_text().splitlines()) if log.is_file() else 0

    while not (thresholds / "iter1.rank1.json").is_file() and trainer.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    other = subprocess.Popen(["sleep", "600"])  # the command that took the run directory over
    try:
        (run / ".lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "started": 0}))
        at_takeover = logged()
        trainer.join(timeout=120)
        assert not trainer.is_alive() and "error" in ended, "the workers trained on after losing the run directory"
        # the watch looks every second: a few seconds of steps at most (here about 10 a second), of 360
        assert logged() - at_takeover <= 80, "steps went on after the takeover"
    finally:
        other.kill()
        run_lock.release(run)
    assert (run / ".lock").is_file() and os.getpid() != json.loads((run / ".lock").read_text())["pid"]
    for it in (0, 1):
        r0, r1 = (json.loads((thresholds / f"iter{it}.rank{rank}.json").read_text()) for rank in (0, 1))
        assert len(r0) == 3 and r0 == r1, it
