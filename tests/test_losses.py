"""Each loss against values computed by hand on small tensors."""

import math

import numpy as np
import pytest
import torch

from conlst_ray.algorithm.losses import (
    NL_EPS,
    clcs_loss,
    conl_loss,
    contrastive_negative_loss,
    mixup,
    negative_learning_loss,
    pairwise_similarity,
    random_complementary_labels,
    ssl_loss,
    supervised_loss,
    unlabelled_loss,
)


def logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_negative_learning_loss_eq1_by_hand():
    # p = [0.7, 0.2, 0.1]; complementary 1 -> -log(1 - 0.2); complementary 0 -> -log(1 - 0.7)
    logits = logits_of([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    loss = negative_learning_loss(logits, torch.tensor([1, 0]))
    assert loss.tolist() == pytest.approx([-math.log(0.8), -math.log(0.3)], rel=1e-6)


def test_negative_learning_loss_is_finite_when_p_is_one():
    logits = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    loss = negative_learning_loss(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(NL_EPS), rel=1e-5)  # clamped, not inf
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_random_complementary_labels_never_the_label_and_uniform():
    labels = torch.tensor([0, 1, 2] * 3000)
    comp = random_complementary_labels(labels, 3, torch.Generator().manual_seed(0))
    assert (comp != labels).all()
    for c in range(3):
        others = comp[labels == c]
        shares = torch.bincount(others, minlength=3).float() / len(others)
        assert shares[c] == 0 and all(abs(shares[o] - 0.5) < 0.04 for o in range(3) if o != c)
    again = random_complementary_labels(labels, 3, torch.Generator().manual_seed(0))
    assert torch.equal(comp, again)


def test_clcs_loss_eq7_by_hand():
    # Two classes: the complementary label is forced (the other class).
    # row 0: p = [0.9, 0.1], label 0 -> ybar 1 -> -log(1 - 0.1)
    # row 1: p = [0.6, 0.4], label 1 -> ybar 0 -> -log(1 - 0.6)
    logits = logits_of([[0.9, 0.1], [0.6, 0.4]])
    expected = (-math.log(0.9) - math.log(0.4)) / 2
    assert clcs_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_conl_total_eq8():
    assert conl_loss(torch.tensor(2.0), torch.tensor(3.0), 0.001).item() == pytest.approx(2.003)


def eq6_by_hand(s_pos, s_negs):
    return -math.log(math.exp(s_pos) / (math.exp(s_pos) + sum(math.exp(s) for s in s_negs)))


@pytest.mark.parametrize("squared, tau", [(True, 1.0), (True, 0.5), (False, 1.0), (False, 0.2)])
def test_contrastive_negative_loss_eq6_by_hand(squared, tau):
    # 1-d embeddings: anchor 0, positive 1, negatives 2 and 0.5
    # squared:  s_pos = -1/tau, s_neg = -4/tau, -0.25/tau
    # plain:    s_pos = -1/tau, s_neg = -2/tau, -0.5/tau
    a = torch.tensor([[0.0]], dtype=torch.float64)
    p = torch.tensor([[1.0]], dtype=torch.float64)
    bank = torch.tensor([[2.0], [0.5]], dtype=torch.float64)
    loss = contrastive_negative_loss(a, p, bank, torch.tensor([[0, 1]]), tau, squared)
    negs = [-4.0, -0.25] if squared else [-2.0, -0.5]
    assert loss.item() == pytest.approx(eq6_by_hand(-1.0 / tau, [n / tau for n in negs]), rel=1e-6)


def test_missing_negatives_are_left_out_and_no_negative_gives_zero():
    a, p = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [1.0]])
    bank = torch.tensor([[2.0], [0.5]])
    per_anchor = contrastive_negative_loss(a, p, bank, torch.tensor([[0, -1], [-1, -1]]), 1.0, reduction="none")
    assert per_anchor[0].item() == pytest.approx(eq6_by_hand(-1.0, [-4.0]), rel=1e-5)
    assert per_anchor[1].item() == pytest.approx(0.0, abs=1e-7)


def test_duplicate_negatives_in_a_bank_equal_an_expanded_batch():
    torch.manual_seed(0)
    a, p, bank = torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4)
    index = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 0, 1]])
    expanded = bank[index]  # what encoding every drawn negative separately would give
    manual = []
    for i in range(3):
        s_pos = -((a[i] - p[i]) ** 2).sum().item()
        manual.append(eq6_by_hand(s_pos, [-((a[i] - n) ** 2).sum().item() for n in expanded[i]]))
    assert contrastive_negative_loss(a, p, bank, index, 1.0).item() == pytest.approx(np.mean(manual), rel=1e-5)


@pytest.mark.parametrize("squared", [True, False])
def test_contrastive_loss_gradcheck(squared):
    torch.manual_seed(0)
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 1], [2, -1], [3, 3]])
    assert torch.autograd.gradcheck(lambda x, y, z: contrastive_negative_loss(x, y, z, index, 0.7, squared),
                                    (a, p, bank))


def test_similarity_is_negative_distance_over_tau():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert pairwise_similarity(a, b, 2.0, squared=False).item() == pytest.approx(-2.5)
    assert pairwise_similarity(a, b, 2.0, squared=True).item() == pytest.approx(-12.5)


def test_supervised_loss_eq13_by_hand():
    # logits [0, ln 3] -> p = [1/4, 3/4]; label 1 -> -log(3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert supervised_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_unlabelled_loss_eq14_mean_over_all_rows():
    # rows 0 and 2 pass the threshold; their CE: -log(0.5) and -log(0.25); mean over 4 rows
    logits = logits_of([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [0.25, 0.25, 0.5], [0.1, 0.1, 0.8]])
    targets = torch.tensor([0, 1, 0, 2])
    mask = torch.tensor([True, False, True, False])
    expected = (-math.log(0.5) - math.log(0.25)) / 4
    assert unlabelled_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    soft = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.5, 0, 0.5], [0, 0, 1]], dtype=torch.float64)
    # row 2 soft: -(0.5 log 0.25 + 0.5 log 0.5)
    expected_soft = (-math.log(0.5) - 0.5 * math.log(0.25) - 0.5 * math.log(0.5)) / 4
    assert unlabelled_loss(logits, soft, mask).item() == pytest.approx(expected_soft, rel=1e-6)
    assert unlabelled_loss(logits, targets, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_ssl_loss_eq12():
    assert ssl_loss(torch.tensor(0.5), torch.tensor(0.25), 2.0).item() == pytest.approx(1.0)


def test_mixup_eqs_9_10_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    h_mix, y_mix, lam, perm = mixup(h, y, 4.0, np.random.default_rng(0), lam=0.25, perm=torch.tensor([1, 0]))
    assert torch.allclose(h_mix, torch.tensor([[0.25, 0.75], [0.75, 0.25]]))
    assert torch.allclose(y_mix, torch.tensor([[0.25, 0.0, 0.75], [0.75, 0.0, 0.25]]))
    assert torch.allclose(y_mix.sum(-1), torch.ones(2))


def test_mixup_lambda_follows_beta_alpha_alpha_eq11():
    rng = np.random.default_rng(1)
    h, y = torch.zeros(4, 2), torch.zeros(4, 3)
    lams = np.array([mixup(h, y, 4.0, rng)[2] for _ in range(4000)])
    assert abs(lams.mean() - 0.5) < 0.01
    assert abs(lams.var() - 1 / 36) < 0.004  # Beta(4, 4): var = 1 / (4 (2 alpha + 1))
    _, _, lam_a, perm_a = mixup(h, y, 4.0, np.random.default_rng(7))
    _, _, lam_b, perm_b = mixup(h, y, 4.0, np.random.default_rng(7))
    assert lam_a == lam_b and torch.equal(perm_a, perm_b)
