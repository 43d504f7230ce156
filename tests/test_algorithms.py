"""The stage algorithm objects (algorithm/base.py, conl.py, self_training.py)
in the one step loop (training/loop.py), without Ray: what each stage
trains, that its state_dict resumes a run exactly, and that the threshold
rules share one interface."""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.base import SourceTraining
from conlst_ray.algorithm.self_training import SelfTraining
from conlst_ray.algorithm.thresholds import make_thresholds
from conlst_ray.config import SSLConfig, load_config
from conlst_ray.data.synthetic import SyntheticBenchmark
from conlst_ray.models.encoder import build_model, synthetic_tokenizer
from conlst_ray.training.batches import encode_table
from conlst_ray.training.loop import StepModule, fit

BENCH = dict(seed=5, n_source_train=96, n_unlabelled=64, n_dev=30, n_test=30)
CFG = ["source.epochs=2", "source.batch_size=16", "conl.batch_size=16", "conl.source_batch_size=8",
       "ssl.batch_size=8", "ssl.iterations=2", "ssl.threshold_quantile=0.5", "data.target_langs=[far]",
       "resources.prefetch_batches=2"]

PLAIN_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from conlst_ray.algorithm.base import SourceTraining
    from conlst_ray.algorithm.conl import CoNL
    from conlst_ray.algorithm.self_training import SelfTraining
    from conlst_ray.config import load_config
    from conlst_ray.data.synthetic import SyntheticBenchmark
    from conlst_ray.models.encoder import build_model, synthetic_tokenizer
    from conlst_ray.training.batches import encode_table
    from conlst_ray.training.inference import predict_proba
    from conlst_ray.training.loop import StepModule, fit

    cfg = load_config(None, sys.argv[1:])
    bench = SyntheticBenchmark(**json.loads(sys.stdin.read()))
    tok = synthetic_tokenizer(bench)
    source = encode_table(tok, bench.table("src", "train"), 64)
    target = encode_table(tok, bench.table("far", "unlabelled"), 64)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok)
    out = {}
    for algo in (SourceTraining(model, cfg, tok, "cpu", source),
                 CoNL(model, cfg, tok, "cpu", source, target, predict_proba(model, target, tok.pad_token_id)),
                 SelfTraining(model, cfg, tok, "cpu", source, target)):
        out[algo.name] = [logs for _, _, logs in fit(algo, StepModule(model), prefetch_depth=2)]
    out["ray imported"] = "ray" in sys.modules
    print(json.dumps(out, default=float))
""")


def test_every_stage_trains_in_the_plain_loop_without_ray():
    """Source -> CoNL -> self-training as algorithm objects in one process
    that never imports Ray: each stage runs its own loss terms."""
    import json

    done = subprocess.run([sys.executable, "-c", PLAIN_RUN, *CFG], input=json.dumps(BENCH), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ray imported"] is False
    source, conl, ssl = out["source"], out["conl"], out["ssl"]
    assert len(source) == 2 and source[1]["loss"] < source[0]["loss"]      # it learns
    assert {"loss_cl", "loss_clcs", "pool_size"} <= set(conl[0])          # Eq. 6 + Eq. 7, Eq. 5's pool
    assert len(ssl) == 2 and {"loss_sup", "loss_u", "selected_share", "thresholds"} <= set(ssl[0])
    assert 0 < ssl[0]["selected_share"] <= 1


def _setup():
    cfg = load_config(None, CFG + ["model.dropout=0.1"])
    bench = SyntheticBenchmark(**BENCH)
    tok = synthetic_tokenizer(bench)
    source = encode_table(tok, bench.table("src", "train"), 64)
    target = encode_table(tok, bench.table("far", "unlabelled"), 64)
    return cfg, tok, source, target


def _model(cfg, tok):
    torch.manual_seed(0)
    return build_model(cfg.model, tok)


@pytest.mark.parametrize("stage", ["source", "ssl"])
def test_state_dict_resumes_a_stage_exactly(stage):
    """Epoch by epoch through state_dict/load_state_dict into a fresh object
    (model, optimizer, schedule, thresholds, random state) gives the weights
    of the uninterrupted run, bit for bit -- dropout included."""
    cfg, tok, source, target = _setup()

    def make(model):
        if stage == "source":
            return SourceTraining(model, cfg, tok, "cpu", source)
        return SelfTraining(model, cfg, tok, "cpu", source, target)

    torch.manual_seed(1)
    straight = make(_model(cfg, tok))
    list(fit(straight, StepModule(straight.model)))
    torch.manual_seed(1)
    first = make(_model(cfg, tok))
    epoch, step, _ = next(fit(first, StepModule(first.model)))  # the first epoch only
    state = copy.deepcopy(first.state_dict())
    assert epoch == 0 and step > 0
    torch.manual_seed(99)  # a restarted worker's RNG comes from the state, not from here
    second = make(_model(cfg, tok))
    second.load_state_dict(state)
    list(fit(second, StepModule(second.model), start_epoch=epoch + 1, step=step))
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    moved = [not torch.equal(a, b) for a, b in zip(state["model"].values(), second.model.state_dict().values())]
    assert any(moved)  # the resumed epoch did train


def test_threshold_rules_share_one_interface():
    """Every rule takes an iteration's labelling through ``observe`` and
    applies its own policy; the caller never branches on the rule."""
    rng = np.random.default_rng(0)
    q = rng.dirichlet([0.5, 0.5, 0.5], size=400).astype(np.float32)
    conf = q.max(-1)
    for name in ("fixed", "flexmatch", "class_quantile"):
        rule = make_thresholds(SSLConfig(thresholding=name, threshold=0.9, threshold_quantile=0.6), len(q), 3)
        rule.observe(q)
        mask, pred = rule.mask(torch.as_tensor(q))
        described = rule.describe()
        assert set(described) == {"tau", "thresholds"} and len(described["thresholds"]) == 3
        if name == "class_quantile":  # each class keeps its top 40 %
            assert described["tau"] is None and mask.float().mean() == pytest.approx(0.4, abs=0.02)
        else:  # tau relative: the 0.6-quantile of this labelling's confidences, not the absolute 0.9
            assert described["tau"] == pytest.approx(float(np.quantile(conf, 0.6)), rel=1e-6)
    fixed = make_thresholds(SSLConfig(thresholding="fixed", threshold=0.9, threshold_quantile=0.6), len(q), 3)
    fixed.observe(q)
    assert fixed.mask(torch.as_tensor(q))[0].float().mean() == pytest.approx(0.4, abs=0.01)


def test_head_warmup_fits_the_contrastive_head_alone_before_conl():
    """conl.head_warmup_steps: Eq. 6 falls while only the contrastive head
    moves (encoder and classifier untouched), before CoNL's first step."""
    from conlst_ray.algorithm.conl import CoNL

    cfg = load_config(None, CFG + ["conl.head_warmup_steps=200", "conl.head_warmup_lr=1e-2", "conl.gamma_quantile=0.5",
                                   "conl.num_negatives=4"])
    bench = SyntheticBenchmark(**BENCH)
    tok = synthetic_tokenizer(bench)
    source = encode_table(tok, bench.table("src", "train"), 64)
    target = encode_table(tok, bench.table("far", "unlabelled"), 64)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # pseudo-labels of every class, so every anchor has negatives (an untrained model predicts one class)
    q = torch.softmax(3 * torch.randn(len(target), 3, generator=torch.Generator().manual_seed(1)), -1).numpy()
    algo = CoNL(model, cfg, tok, "cpu", source, target, q)
    algo.begin_epoch(0)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"contrastive_head.weight", "contrastive_head.bias"}
    logs = algo.head_warmup
    assert logs["head_warmup_loss_last"] < logs["head_warmup_loss_first"]
    assert model.training                                   # CoNL's steps that follow keep dropout
    assert "head_warmup_loss_last" in algo.end_epoch(0)
