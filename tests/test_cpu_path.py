"""The CPU path for real encoders: frozen lower layers computed once per row
(model.cache_frozen) give the same model outputs as running them, on a tiny
BERT and on the real multilingual-e5-small with real XNLI pairs; the cache
file is keyed by the frozen weights; rows a view changes run the frozen
layers again; length buckets keep an epoch's rows; bf16 on a CPU without it
is refused in one line; selection with equal counts per (language, class)."""

import numpy as np
import pytest
import torch
from helpers import logged

from conlst_ray.config import load_config
from conlst_ray.config.sections import ConfigError
from conlst_ray.models.encoder import apply_freezing, build_model
from conlst_ray.training.batches import Encoded, batch_of
from conlst_ray.training.frozen_cache import FrozenRun, cached_states, compute_states


def tiny(freeze: int = 1, extra=()):
    cfg = load_config(None, [f"model.freeze_layers={freeze}", "model.cache_frozen=true", *extra])
    from conlst_ray.models.encoder import build_tokenizer

    tok = build_tokenizer(cfg.model, cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok)
    apply_freezing(model, cfg.model)
    return cfg, tok, model


def random_rows(n=40, seed=0, pair_types=True):
    rng = np.random.default_rng(seed)
    ids = [list(rng.integers(5, 100, size=int(rng.integers(4, 24)))) for _ in range(n)]
    types = [[0] * (len(x) // 2) + [1] * (len(x) - len(x) // 2) for x in ids] if pair_types else None
    return Encoded(ids, types, rng.integers(0, 3, n), list(range(n)), ["de"] * (n // 2) + ["sw"] * (n - n // 2))


def test_cached_states_give_the_outputs_of_the_full_encoder():
    _, _, model = tiny()
    rows = random_rows()
    model.eval()
    index = np.arange(5, 25)
    with torch.no_grad():
        full = model(**batch_of(rows, index, 0))
        rows.frozen = compute_states(model, rows, FrozenRun(1, batch_size=7))
        batch = batch_of(rows, index, 0)
        assert "frozen_hidden" in batch
        cached = model(**batch)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_rows_a_view_changed_run_the_frozen_layers_again():
    _, _, model = tiny()
    rows = random_rows()
    rows.frozen = compute_states(model, rows, FrozenRun(1))
    model.eval()
    index = np.arange(0, 12)
    batch = batch_of(rows, index, 0)
    changed = batch["input_ids"].clone()
    changed[::2, 2] = 7  # a view (masking) changed the tokens of every other row
    stale = torch.zeros(len(index), dtype=torch.bool)
    stale[::2] = True
    with torch.no_grad():
        expected = model(changed, batch["attention_mask"], batch["token_type_ids"])
        states = rows.frozen.padded(index, changed.shape[1], keep=~stale.numpy())
        got = model(changed, batch["attention_mask"], batch["token_type_ids"], states, stale)
        stale_ignored = model(changed, batch["attention_mask"], batch["token_type_ids"], batch["frozen_hidden"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stale_ignored[::2], expected[::2], atol=1e-4)  # the cache alone would be wrong there


def test_a_training_step_from_the_cache_trains_only_the_upper_layers():
    _, _, model = tiny(extra=["model.dropout=0.0"])
    rows = random_rows()
    rows.frozen = compute_states(model, rows, FrozenRun(1))
    model.train()
    batch = batch_of(rows, np.arange(16), 0)
    loss = torch.nn.functional.cross_entropy(model(**batch), torch.as_tensor(rows.labels[:16]))
    loss.backward()
    lower = [p for m in (model.encoder.embeddings, model.encoder.encoder.layer[0]) for p in m.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in lower)
    upper = list(model.encoder.encoder.layer[1].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in upper)


def test_the_cache_file_is_keyed_by_the_frozen_weights(tmp_path):
    cfg, _, model = tiny()
    rows = random_rows()
    first = cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    files = sorted(tmp_path.glob("frozen-*.bin"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    assert files[0].stat().st_mtime_ns == stamp                      # read back, not recomputed
    assert torch.equal(again.flat, first.flat)
    model.encoder.encoder.layer[1].output.dense.weight.data.add_(1.0)  # an upper layer: same frozen part
    cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    assert len(list(tmp_path.glob("frozen-*.bin"))) == 1
    model.encoder.encoder.layer[0].output.dense.weight.data.add_(1.0)  # a frozen layer: other states
    changed = cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    assert len(list(tmp_path.glob("frozen-*.bin"))) == 2
    assert not torch.equal(changed.flat, first.flat)
    assert not list(tmp_path.glob(".*tmp"))                           # nothing half-written left


def test_cache_frozen_needs_frozen_layers():
    with pytest.raises(ConfigError, match="model.cache_frozen = true needs model.freeze_layers >= 1"):
        load_config(None, ["model.cache_frozen=true"])


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line(monkeypatch):
    from conlst_ray.pipeline import preflight

    cfg = load_config(None, ["resources.precision=bf16"])
    monkeypatch.setattr(preflight, "cpu_has_bf16", lambda: False)
    (line,) = preflight.check_precision(cfg)
    assert line.startswith("resources.precision=bf16: this CPU has no native bf16") and "\n" not in line
    monkeypatch.setattr(preflight, "cpu_has_bf16", lambda: True)
    assert preflight.check_precision(cfg) == []
    assert preflight.check_precision(load_config(None, ["resources.precision=fp32"])) == []


def test_length_buckets_keep_the_epochs_rows_and_cut_the_padding():
    from conlst_ray.training.distributed import global_plan

    lengths = np.random.default_rng(1).integers(5, 120, 3200)
    plain = global_plan(3200, 32, seed=0, epoch=0)
    bucketed = global_plan(3200, 32, seed=0, epoch=0, lengths=lengths)
    assert sorted(np.concatenate(bucketed)) == sorted(np.concatenate(plain))   # the same rows, each once
    assert len(bucketed) == len(plain)
    padded = lambda plan: sum(len(b) * lengths[b].max() for b in plan)  # noqa: E731
    assert padded(bucketed) < 0.7 * padded(plain)
    again = global_plan(3200, 32, seed=0, epoch=0, lengths=lengths)
    assert all(np.array_equal(a, b) for a, b in zip(again, bucketed))           # seeded: every worker agrees
    other = global_plan(3200, 32, seed=0, epoch=1, lengths=lengths)
    assert not all(np.array_equal(a, b) for a, b in zip(other, bucketed))


def test_lang_class_top_selects_equal_counts_per_language_and_class():
    from conlst_ray.algorithm.thresholds import make_thresholds

    cfg = load_config(None, ["ssl.thresholding=lang_class_top", "ssl.threshold_quantile=0.5"])
    rng = np.random.default_rng(0)
    langs = np.array(["de"] * 300 + ["sw"] * 300)
    logits = rng.normal(size=(600, 3))
    logits[:300, 0] += 2.0          # de: mostly class 0, and confident
    q = torch.softmax(torch.as_tensor(logits), -1).numpy()
    rule = make_thresholds(cfg.ssl, 600, 3, langs)
    rule.observe(q)
    mask, pred = rule.mask(torch.as_tensor(q))
    mask, pred = mask.numpy(), pred.numpy()
    for lang in ("de", "sw"):
        mine = langs == lang
        counts = [int((mask & mine & (pred == c)).sum()) for c in range(3)]
        available = [int((mine & (pred == c)).sum()) for c in range(3)]
        assert counts == [min(50, a) for a in available]      # (1 - 0.5) * 300 / 3 each, or all it has
    conf = q.max(-1)
    kept, dropped = mask & (langs == "sw") & (pred == 1), ~mask & (langs == "sw") & (pred == 1)
    assert conf[kept].min() >= conf[dropped].max()             # the most confident of each group


def test_self_training_with_ssl_prior_corrects_its_labels_and_selects_per_the_estimated_prior():
    """ssl.prior: a language's q corrected before selection; under em the
    per-class counts follow that language's estimated prior, not equal shares."""
    from types import SimpleNamespace

    from conlst_ray.algorithm.self_training import SelfTraining
    from conlst_ray.algorithm.thresholds import make_thresholds

    rng = np.random.default_rng(1)
    langs = np.array(["de"] * 600)
    truth = rng.choice(3, size=600, p=[0.6, 0.3, 0.1])
    logits = 2.5 * np.eye(3)[truth] + rng.normal(size=(600, 3))
    q = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    for how in ("source", "em"):
        cfg = load_config(None, ["ssl.thresholding=lang_class_top", "ssl.threshold_quantile=0.5", f"ssl.prior={how}"])
        algo = SimpleNamespace(cfg=cfg, source=SimpleNamespace(labels=np.repeat([0, 1, 2], 100)),
                               target=SimpleNamespace(langs=langs), thresholds=make_thresholds(cfg.ssl, 600, 3, langs))
        out = SelfTraining.prior_corrected(algo, q)
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
        algo.thresholds.observe(out)
        mask, pred = algo.thresholds.mask(torch.as_tensor(out))
        counts = np.bincount(pred.numpy()[mask.numpy()], minlength=3)
        if how == "source":     # matched to the balanced source prior: mean posterior a third each, equal counts
            np.testing.assert_allclose(out.mean(0), 1 / 3, atol=1e-3)
            assert counts.max() - counts.min() <= 1
        else:                   # calibrated rows: EM finds the skew, and the selection keeps it
            shares = algo.thresholds.shares["de"]
            assert np.abs(shares - [0.6, 0.3, 0.1]).max() < 0.08   # its posteriors are near calibrated
            assert counts[0] > 2.5 * counts[2]


@pytest.mark.slow
def test_the_real_encoder_scores_the_same_from_its_cache(shared_data):
    """multilingual-e5-small on real XNLI pairs: predictions from the cached
    lower 8 layers match the full model's (fp32); bf16 agrees on the label
    of nearly every pair."""
    from conlst_ray.data.readers import read_corpus
    from conlst_ray.data.task import Task
    from conlst_ray.models.encoder import build_tokenizer
    from conlst_ray.training.batches import encode_table
    from conlst_ray.training.inference import predict_proba

    cfg = load_config(None, ["model.name_or_path=multilingual-e5-small", "model.tokenizer=null",
                             "model.freeze_layers=8", "model.cache_frozen=true", "model.freeze_embeddings=true"])
    tok = build_tokenizer(cfg.model, cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok)
    apply_freezing(model, cfg.model)
    table, _ = read_corpus(f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv", "sw", max_rows=48,
                           task=Task.of(cfg.data.task))
    rows = encode_table(tok, table, 128)
    full = predict_proba(model, rows, tok.pad_token_id, 16, "cpu", "fp32")
    rows.frozen = compute_states(model, rows, FrozenRun(8))
    cached = predict_proba(model, rows, tok.pad_token_id, 16, "cpu", "fp32")
    np.testing.assert_allclose(cached, full, atol=1e-4)
    rows.frozen = compute_states(model, rows, FrozenRun(8, "cpu", "bf16"))
    fast = predict_proba(model, rows, tok.pad_token_id, 16, "cpu", "bf16")
    assert (fast.argmax(-1) == full.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("damage", ["truncated", "zeroed in place"])
def test_a_damaged_states_file_is_computed_again_and_said_so(tmp_path, damage):
    """The states file cut short, or zeroed with its size kept: never mapped
    as if valid (an IndexError, or silently wrong states before); computed
    again, one line saying so, the same states as before."""
    _, _, model = tiny()
    rows = random_rows()
    first = cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    path = next(tmp_path.glob("frozen-*.bin"))
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 3] if damage == "truncated" else bytes(size))
    with logged() as said:
        again = cached_states(model, rows, tmp_path, FrozenRun(1), langs=["de", "sw"])
    assert len([s for s in said if "computing the states again" in s]) == 1, said
    assert torch.equal(again.flat, first.flat)
    assert path.stat().st_size == size
