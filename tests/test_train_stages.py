"""Ray Train stages on the embedded benchmark (small sizes): in-process unit
runs, 1 vs 2 workers at the same global batch, recovery from a killed worker."""

import json

import numpy as np
import pytest

from conlst_ray.config import load_config
from conlst_ray.model import build_model, build_tokenizer
from conlst_ray.ray_jobs.train import fit_stage

pytestmark = pytest.mark.slow

SMALL = ["data.synthetic.n_source_train=256", "data.synthetic.n_unlabelled=96", "data.synthetic.n_dev=60",
         "data.target_langs=[near,far]", "source.batch_size=32", "source.epochs=2", "model.dropout=0.0",
         "resources.cpus_per_worker=0.5"]


def init_model(tmp_path, cfg):
    tok = build_tokenizer(cfg.model, cfg.data)
    return str(build_model(cfg.model, tok).save(tmp_path / "init", tok))


def steps(stage_dir):
    return [json.loads(line) for line in (stage_dir / "steps.jsonl").read_text().splitlines()]


def test_source_stage_in_process(tmp_path, ray_session):
    cfg = load_config(None, SMALL)
    metrics = fit_stage("source", cfg, tmp_path / "source", init_model(tmp_path, cfg), num_workers=0)
    assert (tmp_path / "source" / "model" / "model.safetensors").is_file()
    log = steps(tmp_path / "source")
    assert len(log) == 2 * (256 // 32) and log[-1]["step"] == 16
    assert log[-1]["loss"] < log[0]["loss"]
    assert metrics["epoch"] == 1 and 0 <= metrics["target_dev_acc"] <= 1
