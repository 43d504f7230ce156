"""Complementary labels (Eq. 4), the negative pool (Eq. 5), FlexMatch thresholds,
token masking."""

import logging

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.augment import random_token_mask
from conlst_ray.algorithm.negatives import NegativePool, Predictions, complementary_labels, unique_negatives
from conlst_ray.algorithm.thresholds import (
    ClassQuantileThresholds,
    FixedThresholds,
    FlexMatchThresholds,
    make_thresholds,
)
from conlst_ray.config import SSLConfig

# -- Eq. 4 -----------------------------------------------------------------------------

def test_complementary_labels_by_hand():
    q = torch.tensor([[0.95, 0.03, 0.02],   # confident: any class but 0
                      [0.40, 0.35, 0.25],   # unconfident: argmin = 2
                      [0.10, 0.30, 0.60]])  # unconfident (0.6 < 0.9): argmin = 0
    comp = complementary_labels(q, 0.9, torch.Generator().manual_seed(0))
    assert comp[0].item() in (1, 2) and comp[1].item() == 2 and comp[2].item() == 0


def test_complementary_label_properties_on_random_distributions():
    g = torch.Generator().manual_seed(1)
    q = torch.softmax(torch.randn(5000, 3, generator=g) * 3, -1)
    comp = complementary_labels(q, 0.8, g)
    high = q.max(-1).values >= 0.8
    assert high.any() and (~high).any()
    assert (comp[high] != q.argmax(-1)[high]).all()          # never the argmax
    assert (comp[~high] == q.argmin(-1)[~high]).all()        # always the argmin
    # among confident rows, both other classes are drawn about equally often
    top = q.argmax(-1)[high]
    other = (comp[high] - top) % 3
    assert abs((other == 1).float().mean().item() - 0.5) < 0.05


def test_complementary_labels_seedable():
    q = torch.softmax(torch.randn(100, 3), -1)
    a = complementary_labels(q, 0.5, torch.Generator().manual_seed(3))
    b = complementary_labels(q, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# -- Eq. 5 -----------------------------------------------------------------------------

def make_pool(seed=0, min_members=1):
    # rows:            0     1     2     3     4     5     6     7
    labels = np.array([0,    0,    1,    1,    2,    0,    1,    2])
    conf = np.array([0.95, 0.97, 0.99, 0.50, 0.92, 0.91, 0.93, 0.40])
    langs = ["fr", "fr", "fr", "fr", "fr", "de", "de", "de"]
    return NegativePool(np.arange(8), Predictions(labels, conf, langs), 0.9, 3, seed=seed,
                        min_members=min_members), labels


def test_pool_keeps_confident_members_by_language_and_pooled():
    pool, _ = make_pool()
    assert pool.members[("fr", 0)].tolist() == [0, 1]
    assert pool.members[("fr", 1)].tolist() == [2]          # row 3 is not confident
    assert pool.members[("de", 1)].tolist() == [6]
    assert pool.members[("*", 0)].tolist() == [0, 1, 5]
    assert pool.size("*") == 6                              # rows 3 and 7 excluded


def test_drawn_negatives_carry_the_requested_pseudo_label():
    pool, labels = make_pool()
    comp = np.array([0, 1, 2, 0, 1, 2] * 50)
    langs = ["fr", "fr", "fr", "de", "de", "de"] * 50
    for scope in ("language", "pooled"):
        drawn = pool.draw(comp, 4, langs, scope=scope)
        for i, row in enumerate(drawn):
            valid = row[row >= 0]
            assert (labels[valid] == comp[i]).all()
            if scope == "language":
                assert all(langs[i] == ("fr" if j < 5 else "de") for j in valid)
    pooled = pool.draw(np.array([0] * 200), 4, ["de"] * 200, scope="pooled")
    assert set(pooled.ravel().tolist()) == {0, 1, 5}        # pooled across languages


def test_short_and_empty_classes_follow_the_documented_policy(caplog):
    pool, _ = make_pool()
    drawn = pool.draw(np.array([1]), 4, ["fr"])
    assert drawn.tolist() == [[2, 2, 2, 2]]                  # 1 member < K: repeated
    assert pool.stats["short_class_draws"] == 1
    with caplog.at_level(logging.WARNING):
        drawn = pool.draw(np.array([2, 2]), 3, ["de", "de"])  # no confident class-2 row in de
    assert drawn.tolist() == [[-1, -1, -1], [-1, -1, -1]]
    assert pool.stats["anchors_without_negatives"] == 2
    assert sum("class 2 of language de" in r.message for r in caplog.records) == 1  # logged once
    strict, _ = make_pool(min_members=2)
    assert strict.draw(np.array([1]), 4, ["fr"]).tolist() == [[-1, -1, -1, -1]]


def test_pool_is_seedable_and_resumable():
    a, _ = make_pool(seed=4)
    b, _ = make_pool(seed=4)
    comp = np.array([0, 2, 1, 0])
    assert np.array_equal(a.draw(comp, 5), b.draw(comp, 5))
    state = a.state_dict()
    next_a = a.draw(comp, 5)
    c, _ = make_pool(seed=99)
    c.load_state_dict(state)
    assert np.array_equal(c.draw(comp, 5), next_a)


def test_unique_negatives_dedup_by_hand():
    uniq, remapped = unique_negatives(np.array([[3, 5, 3], [5, -1, 7]]))
    assert uniq.tolist() == [3, 5, 7]
    assert remapped.tolist() == [[0, 1, 0], [1, -1, 2]]


# -- FlexMatch ---------------------------------------------------------------------------

def fed(warmup=True):
    fm = FlexMatchThresholds(num_samples=10, num_classes=3, tau=0.9, warmup=warmup)
    fm.update([0, 1, 2, 3, 4], [0, 0, 0, 1, 2], [True, True, True, True, False])
    return fm


def test_flexmatch_thresholds_by_hand_with_warmup():
    # sigma = [3, 1, 0]; unused = 10 - 4 = 6 -> beta = sigma / max(3, 6) = [1/2, 1/6, 0]
    # T = beta / (2 - beta) * 0.9 = [0.5/1.5, (1/6)/(11/6), 0] * 0.9 = [0.3, 0.9/11, 0]
    fm = fed()
    assert fm.sigma().tolist() == [3, 1, 0]
    assert fm.thresholds().tolist() == pytest.approx([0.3, 0.9 / 11, 0.0], rel=1e-6)


def test_flexmatch_thresholds_by_hand_without_warmup():
    # beta = sigma / 3 = [1, 1/3, 0] -> T = [0.9, (1/3)/(5/3) * 0.9, 0] = [0.9, 0.18, 0]
    assert fed(warmup=False).thresholds().tolist() == pytest.approx([0.9, 0.18, 0.0], rel=1e-6)


def test_beta_one_gives_tau_and_warmup_starts_at_zero():
    fm = FlexMatchThresholds(4, 3, 0.95, warmup=True)
    assert fm.thresholds().tolist() == [0.0, 0.0, 0.0]     # before any confident prediction
    fm.update([0, 1, 2, 3], [1, 1, 1, 0], [True] * 4)       # class 1 is the most learnt: beta = 1
    assert fm.thresholds()[1].item() == pytest.approx(0.95)
    # without warm-up, no confident prediction at all keeps every class at tau:
    # a self-training iteration then selects only rows above tau, never all rows
    cold = FlexMatchThresholds(4, 3, 0.95, warmup=False)
    assert cold.thresholds().tolist() == pytest.approx([0.95] * 3)
    mask, _ = cold.mask(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.96, 0.02, 0.02]]))
    assert mask.tolist() == [False, False, True]


def test_relative_gamma_and_tau_follow_the_models_confidences():
    from conlst_ray.algorithm.negatives import relative_gamma
    from conlst_ray.algorithm.thresholds import relative_tau

    conf = np.concatenate([np.linspace(0.3, 0.7, 101), np.linspace(0.5, 0.9, 101)])
    langs = ["fr"] * 101 + ["ur"] * 101
    rows, by_lang = relative_gamma(conf, langs, 0.8)
    assert by_lang == pytest.approx({"fr": 0.62, "ur": 0.82})
    assert rows[0] == pytest.approx(0.62) and rows[-1] == pytest.approx(0.82)
    pool = NegativePool(np.arange(202), Predictions(np.zeros(202, int), conf, langs), rows, 3)
    assert pool.size("fr") == 21 and pool.size("ur") == 21   # the top fifth of each language
    assert relative_tau(conf, 0.5) == pytest.approx(np.median(conf))


def test_latest_confident_prediction_wins_and_unconfident_keeps_it():
    fm = fed()
    fm.update([0], [2], [True])
    assert fm.sigma().tolist() == [2, 1, 1]
    fm.update([1], [1], [False])                             # not confident: row 1 stays class 0
    assert fm.sigma().tolist() == [2, 1, 1]


def test_one_batch_or_two_workers_give_identical_thresholds():
    rng = np.random.default_rng(0)
    idx = rng.permutation(100)[:60]
    pred = rng.integers(0, 3, 60)
    conf = rng.random(60) > 0.3
    single = FlexMatchThresholds(100, 3, 0.9)
    single.update(idx, pred, conf)
    split = FlexMatchThresholds(100, 3, 0.9)
    split.update(idx[30:], pred[30:], conf[30:])           # "worker 1" first
    split.update(idx[:30], pred[:30], conf[:30])           # then "worker 0"
    assert torch.equal(single.thresholds(), split.thresholds())


def test_flexmatch_state_dict_round_trip_and_mask():
    fm = fed()
    again = FlexMatchThresholds(10, 3, 0.5, warmup=False)
    again.load_state_dict(fm.state_dict())
    assert torch.equal(again.thresholds(), fm.thresholds())
    probs = torch.tensor([[0.35, 0.33, 0.32], [0.25, 0.5, 0.25], [0.1, 0.1, 0.8], [0.29, 0.4, 0.31]])
    mask, pseudo = fm.mask(probs)   # thresholds [0.3, 0.0818, 0]
    assert pseudo.tolist() == [0, 1, 2, 1] and mask.tolist() == [True, True, True, True]
    mask, _ = FixedThresholds(3, 0.45).mask(probs)
    assert mask.tolist() == [False, True, True, False]


def test_make_thresholds_picks_the_rule():
    assert isinstance(make_thresholds(SSLConfig(thresholding="fixed"), 5, 3), FixedThresholds)
    fm = make_thresholds(SSLConfig(threshold=0.8, flexmatch_warmup=False), 5, 3)
    assert isinstance(fm, FlexMatchThresholds) and fm.tau == 0.8 and not fm.warmup
    cq = make_thresholds(SSLConfig(thresholding="class_quantile", threshold_quantile=0.7), 5, 3)
    assert isinstance(cq, ClassQuantileThresholds) and cq.quantile == 0.7


def test_class_quantile_keeps_the_top_share_of_every_class_where_flexmatch_takes_a_whole_class():
    # an under-confident model: no row predicted class 1 passes tau = 0.6
    g = torch.Generator().manual_seed(0)
    pred = torch.arange(300) % 3
    conf = torch.where(pred == 1, 0.35 + 0.2 * torch.rand(300, generator=g), 0.4 + 0.5 * torch.rand(300, generator=g))
    probs = ((1 - conf) / 2).unsqueeze(1).repeat(1, 3)  # the rest split evenly: pred stays the argmax
    probs[torch.arange(300), pred] = conf
    assert torch.equal(probs.argmax(-1), pred)
    fm = FlexMatchThresholds(300, 3, 0.6, warmup=False)
    fm.update(torch.arange(300), pred, conf > 0.6)
    fm_mask, _ = fm.mask(probs)
    assert fm.thresholds()[1] == 0 and fm_mask[pred == 1].all()  # FlexMatch: the whole class passes
    cq = ClassQuantileThresholds(300, 3, 0.7)
    cq.update(torch.arange(300), pred, None, conf)
    mask, _ = cq.mask(probs)
    for c in range(3):
        share = mask[pred == c].float().mean().item()
        assert 0.25 <= share <= 0.35, (c, share)
        assert conf[(pred == c) & mask].min() >= conf[(pred == c) & ~mask].max()  # the most confident ones
    again = ClassQuantileThresholds(300, 3, 0.5)
    again.load_state_dict(cq.state_dict())
    assert torch.equal(again.thresholds(), cq.thresholds()) and again.quantile == 0.7


# -- masking -------------------------------------------------------------------------------

def test_masking_never_touches_special_tokens_or_padding():
    ids = torch.tensor([[2, 10, 11, 3, 12, 3, 0, 0], [2, 13, 3, 14, 15, 16, 17, 3]])
    att = (ids != 0).long()
    full = random_token_mask(ids, att, special_ids=[0, 2, 3], mask_id=4, rate=1.0)
    assert full.tolist() == [[2, 4, 4, 3, 4, 3, 0, 0], [2, 4, 3, 4, 4, 4, 4, 3]]
    assert torch.equal(random_token_mask(ids, att, [0, 2, 3], 4, rate=0.0), ids)
    assert ids[0, 1] == 10  # input untouched


def test_masking_rate_and_seed():
    ids = torch.randint(5, 1000, (200, 50))
    att = torch.ones_like(ids)
    a = random_token_mask(ids, att, [0, 2, 3], 4, 0.15, torch.Generator().manual_seed(0))
    b = random_token_mask(ids, att, [0, 2, 3], 4, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs((a == 4).float().mean().item() - 0.15) < 0.01
