"""The per-stage steps on the tiny model: forward-pass accounting, which loss
terms run under each switch, and the arithmetic that ties them together."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.negatives import NegativePool
from conlst_ray.algorithm.steps import SslBatch, conl_step, make_conl_batch, source_step, ssl_step, strong_view
from conlst_ray.config import CoNLConfig, ModelConfig, SSLConfig
from conlst_ray.data.synthetic import SyntheticBenchmark
from conlst_ray.model import build_model
from conlst_ray.training import batch_of, encode_table


BENCH = SyntheticBenchmark(seed=5, n_source_train=64, n_unlabelled=40, n_dev=30, n_test=30)


@pytest.fixture(scope="module")
def synthetic_tokenizer():
    # the tokenizer must come from the same benchmark seed, or words are [UNK]
    from conlst_ray.model import synthetic_tokenizer as build

    return build(BENCH)


@pytest.fixture(scope="module")
def setup(synthetic_tokenizer):
    bench = BENCH
    target = encode_table(synthetic_tokenizer, bench.table("far", "unlabelled"), 64)
    source = encode_table(synthetic_tokenizer, bench.table("src", "train"), 64)
    rng = np.random.default_rng(0)
    q = rng.dirichlet([0.3, 0.3, 0.3], size=len(target)).astype(np.float32)  # peaked, so many are confident
    assert len(set(map(tuple, target.input_ids))) == len(target)  # distinct rows, no [UNK] collapse
    return target, source, q


def model_with_counter(tok):
    torch.manual_seed(0)
    model = build_model(ModelConfig(), tok)
    calls = []
    original = model.encoder.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.encoder.forward = counting
    return model, calls


def conl_batch(setup, cfg, tok, with_source=True):
    target, source, q = setup
    pool = NegativePool(np.arange(len(target)), q.argmax(-1), q.max(-1), cfg.gamma, 3, target.langs, seed=0)
    g = torch.Generator().manual_seed(0)
    return make_conl_batch(target, np.arange(16), q, pool, cfg, tok.pad_token_id, g,
                           source if with_source else None, np.arange(8) if with_source else None)


def test_conl_step_encodes_two_views_plus_unique_negatives_once(setup, synthetic_tokenizer):
    cfg = CoNLConfig(gamma=0.7, num_negatives=8, use_clcs=False)
    batch = conl_batch(setup, cfg, synthetic_tokenizer, with_source=False)
    n_unique = batch.negatives["input_ids"].shape[0]
    drawn = int((batch.negative_index >= 0).sum())
    assert n_unique < drawn  # the batch really has repeated negatives
    model, calls = model_with_counter(synthetic_tokenizer)
    loss, logs = conl_step(model, batch, cfg)
    assert calls == [16, 16, n_unique]  # anchor view, positive view, unique negatives
    loss.backward()
    assert model.contrastive_head.weight.grad.abs().sum() > 0
    assert set(logs) == {"loss", "loss_cl", "negatives_missing"}


def test_conl_step_with_clcs_adds_one_source_pass_and_eq8(setup, synthetic_tokenizer):
    cfg = CoNLConfig(gamma=0.7, lambda_clcs=0.5)
    batch = conl_batch(setup, cfg, synthetic_tokenizer)
    model, calls = model_with_counter(synthetic_tokenizer)
    loss, logs = conl_step(model, batch, cfg, torch.Generator().manual_seed(0))
    assert len(calls) == 4 and calls[-1] == 8
    assert logs["loss"] == pytest.approx(logs["loss_cl"] + 0.5 * logs["loss_clcs"], rel=1e-5)
    loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0  # CLCS keeps the classifier in step


def test_without_contrastive_uses_negative_learning_on_targets(setup, synthetic_tokenizer):
    cfg = CoNLConfig(gamma=0.7, use_contrastive=False, use_clcs=False)
    batch = conl_batch(setup, cfg, synthetic_tokenizer)
    model, calls = model_with_counter(synthetic_tokenizer)
    model.eval()  # deterministic, to recompute Eq. 1 by hand below
    loss, logs = conl_step(model, batch, cfg)
    assert set(logs) == {"loss", "loss_nl_target"} and calls == [16]
    p = model(**batch.anchors).softmax(-1)
    expected = -torch.log(1 - p.gather(1, batch.complementary[:, None])).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_make_conl_batch_draws_negatives_of_the_complementary_class(setup, synthetic_tokenizer):
    target, _, q = setup
    cfg = CoNLConfig(gamma=0.7, num_negatives=5)
    batch = conl_batch(setup, cfg, synthetic_tokenizer)
    pool = NegativePool(np.arange(len(target)), q.argmax(-1), q.max(-1), cfg.gamma, 3, target.langs, seed=0)
    # rebuild the drawn sample ids from the unique bank to check their pseudo-labels
    g = torch.Generator().manual_seed(0)
    again = make_conl_batch(target, np.arange(16), q, pool, cfg, synthetic_tokenizer.pad_token_id, g)
    assert torch.equal(again.negative_index, batch.negative_index)
    pseudo = q.argmax(-1)
    bank_ids = [target.input_ids.index(row) for row in
                [ids[ids != 0].tolist() for ids in batch.negatives["input_ids"]]]
    for i in range(16):
        for j in batch.negative_index[i][batch.negative_index[i] >= 0].tolist():
            assert pseudo[bank_ids[j]] == batch.complementary[i].item()
            assert q.max(-1)[bank_ids[j]] >= cfg.gamma


def ssl_batch(setup, tok, mask):
    target, source, q = setup
    idx = np.arange(len(mask))
    return SslBatch(source=batch_of(source, idx, tok.pad_token_id), source_labels=torch.as_tensor(source.labels[idx]),
                    strong=batch_of(target, idx, tok.pad_token_id),
                    pseudo_labels=torch.as_tensor(q[idx].argmax(-1)), mask=torch.as_tensor(mask))


def test_ssl_step_eq12_and_mixup_switch(setup, synthetic_tokenizer):
    mask = np.array([True, False, True, True, False, True, True, False])
    model, _ = model_with_counter(synthetic_tokenizer)
    loss, logs = ssl_step(model, ssl_batch(setup, synthetic_tokenizer, mask), SSLConfig(lambda_u=2.0),
                          np.random.default_rng(0))
    assert "mixup_lambda" in logs and 0 < logs["mixup_lambda"] < 1
    assert logs["loss"] == pytest.approx(logs["loss_sup"] + 2.0 * logs["loss_u"], rel=1e-5)
    assert logs["selected_rate"] == pytest.approx(5 / 8)
    _, logs = ssl_step(model, ssl_batch(setup, synthetic_tokenizer, mask), SSLConfig(use_mixup=False),
                       np.random.default_rng(0))
    assert "mixup_lambda" not in logs
    _, logs = ssl_step(model, ssl_batch(setup, synthetic_tokenizer, np.zeros(8, bool)), SSLConfig(),
                       np.random.default_rng(0))
    assert logs["loss_u"] == 0.0 and logs["loss"] == pytest.approx(logs["loss_sup"])


def test_ssl_step_without_mixup_is_eq14_by_hand(setup, synthetic_tokenizer):
    mask = np.array([True, False, True, False])
    batch = ssl_batch(setup, synthetic_tokenizer, mask)
    model, _ = model_with_counter(synthetic_tokenizer)
    model.eval()
    _, logs = ssl_step(model, batch, SSLConfig(use_mixup=False), np.random.default_rng(0))
    logp = model(**batch.strong).log_softmax(-1)
    rows = [0, 2]
    expected = -sum(logp[r, batch.pseudo_labels[r]].item() for r in rows) / 4
    assert logs["loss_u"] == pytest.approx(expected, rel=1e-5)


def test_strong_view_switches():
    weak = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    bt = {"input_ids": torch.tensor([[2, 20, 21, 22, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    view, logs = strong_view(weak, bt, SSLConfig(use_masking=False), [2, 3], 4)
    assert torch.equal(view["input_ids"], bt["input_ids"]) and logs["aug_backtranslation"] == 1.0
    view, logs = strong_view(weak, bt, SSLConfig(use_backtranslation=False, use_masking=False), [2, 3], 4)
    assert torch.equal(view["input_ids"], weak["input_ids"]) and logs["aug_backtranslation"] == 0.0
    view, logs = strong_view(weak, None, SSLConfig(mask_rate=0.99), [2, 3], 4, torch.Generator().manual_seed(0))
    assert view["input_ids"].tolist() == [[2, 4, 4, 3]] and logs["aug_masking"] == 1.0


def test_source_step_is_cross_entropy(setup, synthetic_tokenizer):
    _, source, _ = setup
    model, _ = model_with_counter(synthetic_tokenizer)
    model.eval()
    batch = batch_of(source, np.arange(4), synthetic_tokenizer.pad_token_id)
    labels = torch.as_tensor(source.labels[:4])
    loss, logs = source_step(model, batch, labels)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(model(**batch), labels).item(), rel=1e-6)


def test_algorithm_layer_does_not_import_ray():
    code = ("import sys\n"
            "import conlst_ray.algorithm.losses, conlst_ray.algorithm.negatives, conlst_ray.algorithm.thresholds\n"
            "import conlst_ray.algorithm.augment, conlst_ray.algorithm.steps, conlst_ray.model, conlst_ray.training\n"
            "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'ray imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
