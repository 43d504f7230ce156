"""The class-prior estimate and correction (algorithm/prior.py): EM finds a
skewed prior from calibrated posteriors, the matching bias hits the prior
it is given, a correction touches only its own language's rows."""

import numpy as np

from conlst_ray.algorithm.prior import em_bias, em_prior, matching_bias
from conlst_ray.models.language_bias import correct_by_language, corrected


def calibrated_posteriors(prior, n=6000, seed=0, separation=1.2):
    """Rows drawn with class shares ``prior`` from three Gaussian classes, and
    their Bayes posteriors under a *uniform* prior (a model trained on
    balanced data): calibrated, so label shift is all there is."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=prior)
    means = separation * np.eye(3)
    x = means[y] + rng.normal(size=(n, 3))
    logits = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    q = np.exp(logits - logits.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True), y


def test_em_recovers_a_skewed_prior_and_its_correction_raises_accuracy():
    truth = np.array([0.6, 0.3, 0.1])
    q, y = calibrated_posteriors(truth)
    naive = q.mean(0)
    est = em_prior(q, np.full(3, 1 / 3))
    assert np.abs(est - truth).max() < 0.03          # within 3 points of the true shares
    assert np.abs(naive - truth).max() > 0.08        # the mean posterior alone is not (it leans to uniform)
    before = (q.argmax(1) == y).mean()
    after = (corrected(q, em_bias(est, np.full(3, 1 / 3))).argmax(1) == y).mean()
    assert after > before + 0.03


def test_em_on_balanced_rows_stays_at_the_source_prior():
    q, _ = calibrated_posteriors(np.full(3, 1 / 3), seed=1)
    assert np.abs(em_prior(q, np.full(3, 1 / 3)) - 1 / 3).max() < 0.02


def test_the_matching_bias_makes_the_mean_posterior_the_prior_it_is_given():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(500, 3)) + np.array([0.0, 1.0, 0.2])   # a model that leans to class 1
    q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for prior in (np.full(3, 1 / 3), np.array([0.5, 0.2, 0.3])):
        bias = matching_bias(q, prior)
        np.testing.assert_allclose(corrected(q, bias).mean(0), prior, atol=1e-5)
        assert abs(bias.sum()) < 1e-9                # centred: a bias is defined up to a constant
    # its first step is the "divide q by its mean" correction: the same argmax on most rows
    first = (q / q.mean(0)).argmax(1)
    assert (first == corrected(q, matching_bias(q, np.full(3, 1 / 3))).argmax(1)).mean() > 0.9


def test_a_correction_touches_only_the_rows_of_its_language():
    q = np.array([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], dtype=np.float32)
    out = correct_by_language(q, ["fr", "en", "fr"], {"fr": [1.0, 0.0, 0.0]})
    np.testing.assert_array_equal(out[1], q[1])
    assert out[0].argmax() == 0 and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)
    assert correct_by_language(q, ["fr"] * 3, {}) is q


def test_bbse_recovers_a_skewed_prior_from_a_miscalibrated_model_where_em_does_not():
    from conlst_ray.algorithm.prior import bbse_prior, confusion

    rng = np.random.default_rng(3)
    # a model that leans to class 1 whatever the input: its posteriors are not calibrated
    def model(y):
        logits = 2.0 * np.eye(3)[y] + rng.normal(size=(len(y), 3)) + np.array([0.0, 1.0, 0.0])
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    dev_y = rng.choice(3, size=3000)                          # labelled, balanced (the source dev set)
    conf = confusion(model(dev_y).argmax(1), dev_y, 3)
    truth = np.array([0.6, 0.3, 0.1])
    q = model(rng.choice(3, size=3000, p=truth))              # unlabelled rows of the same language
    assert np.abs(bbse_prior(q.argmax(1), conf) - truth).max() < 0.04
    assert np.abs(em_prior(q, np.full(3, 1 / 3)) - truth).max() > 0.1
