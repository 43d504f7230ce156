"""Confidence-band accounting (paper Table 4) and the clean/noisy histograms
(Fig. 3-4) on hand-made predictions: counts and weighted accuracy exact."""

import numpy as np
import pyarrow as pa
import pytest

from conlst_ray.reporting.analysis import (
    LabelledPredictions,
    band_stats,
    calibration_markdown,
    calibration_rows,
    join_with_gold,
    weighted_accuracy,
)

# confidence, correct -- worked out by hand below
CONF = [0.95, 0.91, 0.90, 0.70, 0.50, 0.49, 0.34, 0.99]
OK = [True, False, True, True, False, True, False, True]


def test_bands_count_edges_as_middle_and_weight_by_counts():
    stats = band_stats(LabelledPredictions(np.array(CONF), np.array(OK)))
    # high (> 0.9): 0.95 ok, 0.91 wrong, 0.99 ok; middle: 0.90 ok, 0.70 ok, 0.50 wrong; low: 0.49 ok, 0.34 wrong
    assert [(s.band, s.count, s.correct) for s in stats] == [("high", 3, 2), ("mid", 3, 2), ("low", 2, 1)]
    assert stats[0].accuracy == pytest.approx(2 / 3)
    assert weighted_accuracy(stats) == pytest.approx(5 / 8)      # = overall accuracy of the 8 samples


def test_an_empty_band_has_no_accuracy_and_does_not_weigh():
    stats = band_stats(LabelledPredictions(np.array([0.95, 0.97]), np.array([True, False])))
    assert [s.count for s in stats] == [2, 0, 0]
    assert np.isnan(stats[1].accuracy) and weighted_accuracy(stats) == pytest.approx(0.5)


def test_join_with_gold_drops_unlabelled_rows_and_splits_languages():
    preds = pa.table({"id": ["a", "b", "c", "d"], "lang": ["fr", "fr", "de", "de"],
                      "pseudo_label": [0, 1, 2, 2], "confidence": [0.95, 0.6, 0.4, 0.92]})
    corpus = pa.table({"id": ["d", "c", "b", "a"], "label": [1, 2, -1, 0]})
    joined = join_with_gold(preds, corpus)
    assert sorted(joined) == ["de", "fr"]
    assert joined["fr"].confidence.tolist() == [0.95] and joined["fr"].correct.tolist() == [True]
    assert joined["de"].confidence.tolist() == [0.4, 0.92] and joined["de"].correct.tolist() == [True, False]


def test_calibration_table_before_and_after():
    before = {"fr": LabelledPredictions(np.array(CONF), np.array(OK))}
    after = {"fr": LabelledPredictions(np.array([0.95, 0.6, 0.3, 0.99]), np.array([True, False, False, True]))}
    header, rows = calibration_rows(before, after, ["fr", "zh"])     # zh: no predictions, left out
    assert header == ["lang", "band", "count_before", "acc_before", "count_after", "acc_after"]
    assert [r[:3] + [r[4]] for r in rows] == [["fr", "high", 3, 2], ["fr", "mid", 3, 1], ["fr", "low", 2, 1],
                                             ["fr", "all", 8, 4]]
    assert rows[0][5] == 1.0 and rows[3][3] == pytest.approx(5 / 8) and rows[3][5] == pytest.approx(0.5)
    md = calibration_markdown(header, rows)
    assert "| fr | 66.7 -> 100.0 [3 -> 2] | 66.7 -> 0.0 [3 -> 1] | 50.0 -> 0.0 [2 -> 1] | 62.5 -> 50.0 |" in md


def test_histograms_have_labelled_axes_and_a_legend(tmp_path):
    import matplotlib.image

    from conlst_ray.reporting.figures import confidence_histograms

    rng = np.random.default_rng(0)
    preds = {lang: LabelledPredictions(rng.uniform(0.34, 1.0, 200), rng.random(200) < 0.7) for lang in ("fr", "de")}
    # after: the same rows, far more confident -- a taller histogram than before
    after = {lang: LabelledPredictions(np.full(200, 0.97), p.correct) for lang, p in preds.items()}
    path = tmp_path / "hist.png"
    fig = confidence_histograms([("before CoNL", preds), ("after CoNL", after)], ["fr", "de"], path,
                                title="run7: before and after CoNL")
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert ax.get_xlabel() == "confidence" and ax.get_ylabel() == "samples"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean", "noisy"]
    assert fig.axes[0].get_title() == "fr: before CoNL" and fig.axes[3].get_title() == "de: after CoNL"
    # before and after of a language on one count scale, so the eye compares them
    assert fig.axes[0].get_ylim() == fig.axes[2].get_ylim() and fig.axes[1].get_ylim() == fig.axes[3].get_ylim()
    assert fig._suptitle.get_text() == "run7: before and after CoNL"
    assert any("clean = the pseudo-label equals the gold label" in t.get_text() for t in fig.texts)
    image = matplotlib.image.imread(path)                      # a real PNG that opens
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert not list(tmp_path.glob(".*"))                       # no temporary file left behind


def test_band_transitions_follow_each_high_band_row_by_id():
    from conlst_ray.reporting.analysis import band_transitions

    corpus = pa.table({"id": ["a", "b", "c", "d", "e"], "lang": ["fr"] * 5, "label": [0, 1, 2, 0, 1]})
    # before: a (right), b (wrong), c (wrong) in the high band; d, e below it
    before = pa.table({"id": ["a", "b", "c", "d", "e"], "lang": ["fr"] * 5, "pseudo_label": [0, 0, 0, 0, 2],
                       "confidence": [0.95, 0.97, 0.93, 0.6, 0.7]})
    # after (another order): b leaves the band, c is corrected inside it, d (right) and e (wrong) enter it
    after = pa.table({"id": ["e", "d", "c", "b", "a"], "lang": ["fr"] * 5, "pseudo_label": [2, 0, 2, 0, 0],
                      "confidence": [0.95, 0.92, 0.91, 0.8, 0.96]})
    header, rows = band_transitions(before, after, corpus, ["fr", "de"])
    assert len(rows) == 1
    r = dict(zip(header, rows[0]))
    assert (r["high_before"], r["wrong_in_high"]) == (3, 2)
    assert r["wrong_left_high"] == 0.5 and r["right_left_high"] == 0.0
    assert r["entered_high"] == 2 and r["entered_acc"] == 0.5 and r["wrong_high_corrected"] == 0.5


def test_a_wrong_anchors_negatives_include_its_true_class():
    from conlst_ray.reporting.analysis import own_class_negatives

    # three confident rows per class, all right, plus one wrong anchor (gold 1, predicted 0)
    pseudo = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    gold = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 1])
    conf = np.full(10, 0.95)
    wrong, right = own_class_negatives(pseudo, conf, gold, 0.9, 3)
    # the wrong anchor's negatives: half from rows predicted 1 (all gold 1), half from rows predicted 2
    assert wrong == pytest.approx(0.5)
    # a right anchor of class 1 draws from classes 0 (one of four rows is gold 1) and 2
    assert right == pytest.approx(np.mean([0.5 * (0.25 + 0.0)] * 3 + [0.0] * 6))
