"""Calibration of pseudo-labels before and after CoNL (paper Sec. 4.3).

Table 4 of the paper splits target samples into three confidence bands and
reports, per language, the accuracy of the pseudo-labels in each band before
and after contrastive negative learning, plus the accuracy over all bands
weighted by their sample counts (which is the overall accuracy). Figures 3
and 4 show how many clean (pseudo-label = gold) and noisy samples fall at
each confidence. This module computes those numbers from predictions and
gold labels; it needs no Ray and no model.

Band edges: high = confidence > 0.9, low = confidence < 0.5, middle = the
rest, so a confidence of exactly 0.9 or 0.5 counts as middle (the paper
leaves the edges open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conlst_ray.reporting.tables import to_markdown

HIGH_EDGE, LOW_EDGE = 0.9, 0.5
BANDS = ("high", "mid", "low")
CALIBRATION_HEADER = ["lang", "band", "count_before", "acc_before", "count_after", "acc_after"]


@dataclass(frozen=True)
class BandStats:
    band: str
    count: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")


@dataclass
class LabelledPredictions:
    """One language's pseudo-labels next to the gold labels."""
    confidence: np.ndarray   # max_c q, shape [n]
    correct: np.ndarray      # bool, pseudo-label == gold
    predicted: Optional[np.ndarray] = None   # the pseudo-label ids (per-class analysis)

    def __len__(self) -> int:
        return len(self.confidence)


def band_index(confidence: np.ndarray) -> np.ndarray:
    """0 = high (> 0.9), 1 = middle, 2 = low (< 0.5), per sample."""
    confidence = np.asarray(confidence, dtype=np.float64)
    return np.where(confidence > HIGH_EDGE, 0, np.where(confidence < LOW_EDGE, 2, 1))


def band_stats(pred: LabelledPredictions) -> list[BandStats]:
    """Count and correct pseudo-labels per band, in BANDS order."""
    idx = band_index(pred.confidence)
    correct = np.asarray(pred.correct, dtype=bool)
    return [BandStats(name, int((idx == b).sum()), int(correct[idx == b].sum())) for b, name in enumerate(BANDS)]


def weighted_accuracy(stats: list[BandStats]) -> float:
    """Band accuracies weighted by their counts (Table 4's 'Acc Avg.')."""
    total = sum(s.count for s in stats)
    return sum(s.accuracy * s.count for s in stats if s.count) / total if total else float("nan")


def join_with_gold(predictions: pa.Table, corpus: pa.Table) -> dict[str, LabelledPredictions]:
    """Per language: the predictions (id, lang, pseudo_label, confidence) whose
    corpus row carries a gold label (rows labelled -1 are left out)."""
    joined = with_gold(predictions.select(["id", "lang", "pseudo_label", "confidence"]), corpus)
    labels = joined.column("label").to_numpy()
    langs = np.asarray(joined.column("lang").to_pylist())
    pseudo = joined.column("pseudo_label").to_numpy()
    conf = joined.column("confidence").to_numpy()
    known = labels >= 0
    out = {}
    for lang in dict.fromkeys(langs[known].tolist()):
        sel = known & (langs == lang)
        out[lang] = LabelledPredictions(conf[sel], (pseudo == labels)[sel], pseudo[sel])
    return out


def with_gold(table: pa.Table, corpus: pa.Table) -> pa.Table:
    """``table`` (rows keyed by id) with the gold ``label`` of each row's
    corpus row (-1 where the corpus has none), in ``table``'s row order."""
    order = pa.array(np.arange(table.num_rows))
    joined = table.append_column("_row", order).join(corpus.select(["id", "label"]), "id", join_type="left outer")
    joined = joined.sort_by("_row").drop_columns(["_row"])
    return joined.set_column(joined.schema.get_field_index("label"), "label",
                             pc.fill_null(joined.column("label"), -1).cast(pa.int64()))


def calibration_rows(before: dict[str, LabelledPredictions],
                     after: dict[str, LabelledPredictions], langs: list[str]) -> tuple[list, list]:
    """Long-form rows (CSV): language, band (or 'all'), count and accuracy before and after."""
    rows = []
    for lang in langs:
        if lang not in before or lang not in after:
            continue
        sb, sa = band_stats(before[lang]), band_stats(after[lang])
        for b, a in zip(sb, sa):
            rows.append([lang, b.band, b.count, b.accuracy, a.count, a.accuracy])
        rows.append([lang, "all", len(before[lang]), weighted_accuracy(sb), len(after[lang]), weighted_accuracy(sa)])
    return list(CALIBRATION_HEADER), rows


def calibration_markdown(header: list, rows: list, after_name: str = "CoNL") -> str:
    """Table 4's layout: a row per language, 'before -> after' accuracy (%) and
    sample counts per band, then the count-weighted accuracy."""
    by_lang: dict[str, dict[str, list]] = {}
    for row in rows:
        by_lang.setdefault(row[0], {})[row[1]] = row

    def pct(v):
        return "-" if v != v else f"{100 * v:.1f}"

    table = []
    for lang, bands in by_lang.items():
        cells = [f"{pct(r[3])} -> {pct(r[5])} [{r[2]} -> {r[4]}]" for r in (bands[b] for b in BANDS)]
        table.append([lang, *cells, f"{pct(bands['all'][3])} -> {pct(bands['all'][5])}"])
    title = f"Pseudo-label accuracy (%) [samples] per confidence band, before -> after {after_name}:\n\n"
    return title + to_markdown(["lang", "High (>0.9)", "Mid (0.5-0.9)", "Low (<0.5)", "Acc Avg."], table)


# -- per class: what a task's labels see ---------------------------------------------------

CLASS_HEADER = ["lang", "label", "count_before", "acc_before", "count_after", "acc_after"]


def class_rows(before: dict[str, LabelledPredictions], after: dict[str, LabelledPredictions], langs: list[str],
               labels: Sequence[str]) -> tuple[list, list]:
    """Per language and pseudo-label class (named by the task's labels): how
    many rows the model gives that class and how many of them are right
    (its precision), before and after CoNL. A class the source model
    over-predicts with low precision is where Eq. 4's pool is noisiest."""
    rows = []
    for lang in langs:
        if lang not in before or lang not in after:
            continue
        for k, name in enumerate(labels):
            cells = [lang, name]
            for pred in (before[lang], after[lang]):
                mine = pred.predicted == k
                cells += [int(mine.sum()), float(pred.correct[mine].mean()) if mine.any() else float("nan")]
            rows.append(cells)
    return list(CLASS_HEADER), rows


def class_markdown(header: list, rows: list, after_name: str = "CoNL") -> str:
    """A row per language, a column per label: precision (%) and count of
    the rows given that label, before -> after."""
    labels = list(dict.fromkeys(r[1] for r in rows))
    by_lang: dict[str, dict[str, list]] = {}
    for row in rows:
        by_lang.setdefault(row[0], {})[row[1]] = row

    def pct(v):
        return "-" if v != v else f"{100 * v:.1f}"

    table = [[lang, *(f"{pct(r[3])} -> {pct(r[5])} [{r[2]} -> {r[4]}]" for r in (by_label[name] for name in labels))]
             for lang, by_label in by_lang.items()]
    title = f"Pseudo-labels per class: precision (%) [rows given the class], before -> after {after_name}:\n\n"
    return title + to_markdown(["lang", *labels], table)


def recall_by_class(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> list[float]:
    """Share of each gold class predicted right (rows with gold -1 left out)."""
    return [float((pred[gold == k] == k).mean()) if (gold == k).any() else float("nan") for k in range(num_classes)]


TRANSITION_HEADER = ["lang", "high_before", "wrong_in_high", "wrong_left_high", "right_left_high",
                     "entered_high", "entered_acc", "wrong_high_corrected"]


def band_transitions(before: pa.Table, after: pa.Table, corpus: pa.Table, langs: list[str]) -> tuple[list, list]:
    """Where the high band's rows go under CoNL, per language (rows matched
    by id). The paper's mechanism needs the wrong high-confidence pseudo-labels
    to leave the band (or be corrected) while the right ones stay:
    wrong_left_high / right_left_high are the shares of the wrong and of the
    right high-band rows whose confidence falls to <= 0.9; entered_high counts
    rows that rise into the band and entered_acc their accuracy;
    wrong_high_corrected is the share of wrong high-band rows whose
    pseudo-label becomes the gold label."""
    cols = ["id", "lang", "pseudo_label", "confidence"]
    after = after.select(["id", "pseudo_label", "confidence"]).rename_columns(["id", "after_label", "after_conf"])
    paired = with_gold(before.select(cols), corpus)
    order = pa.array(np.arange(paired.num_rows))
    paired = paired.append_column("_row", order).join(after, "id", join_type="inner").sort_by("_row")
    rows = []
    for lang in langs:
        mine = pc.and_(pc.equal(paired.column("lang"), lang), pc.greater_equal(paired.column("label"), 0))
        keep = paired.filter(mine)
        if not keep.num_rows:
            continue
        y = keep.column("label").to_numpy()
        b_pred, b_conf = keep.column("pseudo_label").to_numpy(), keep.column("confidence").to_numpy()
        a_pred, a_conf = keep.column("after_label").to_numpy(), keep.column("after_conf").to_numpy()
        high, wrong, high_after = b_conf > HIGH_EDGE, b_pred != y, a_conf > HIGH_EDGE
        entered = ~high & high_after

        def share(mask, of):
            return float(mask[of].mean()) if of.any() else float("nan")
        rows.append([lang, int(high.sum()), int((high & wrong).sum()), share(~high_after, high & wrong),
                     share(~high_after, high & ~wrong), int(entered.sum()), share(a_pred == y, entered),
                     share(a_pred == y, high & wrong)])
    return list(TRANSITION_HEADER), rows


def transitions_markdown(header: list, rows: list) -> str:
    def pct(v):
        return "-" if v != v else f"{100 * v:.1f}"

    columns = ["lang", "high-band rows before", "wrong among them", "wrong that left the band",
               "right that left the band", "rows that entered", "accuracy of those entering", "wrong ones corrected"]
    table = [[f"{r[0]}", f"{r[1]}", f"{r[2]}", f"{pct(r[3])} %", f"{pct(r[4])} %", f"{r[5]}", f"{pct(r[6])} %",
              f"{pct(r[7])} %"] for r in rows]
    return to_markdown(columns, table)


def own_class_negatives(pseudo: np.ndarray, confidence: np.ndarray, gold: np.ndarray, gamma: float,
                        num_classes: int) -> tuple[float, float]:
    """Eq. 4-5 with set semantics, in expectation: a confident anchor
    (confidence >= gamma) takes its negatives evenly from the confident rows
    predicted as each class other than its pseudo-label. Returns the expected
    share of those negatives whose gold label is the anchor's own gold label,
    for anchors whose pseudo-label is wrong and for those where it is right.
    A wrong anchor's complementary set contains its true class, so part of
    its negatives push it away from the truth."""
    pool = confidence >= gamma
    precision = np.full((num_classes, num_classes), np.nan)  # [k, g]: share of pool rows predicted k with gold g
    for k in range(num_classes):
        members = gold[pool & (pseudo == k)]
        if len(members):
            precision[k] = np.bincount(members, minlength=num_classes)[:num_classes] / len(members)

    def expected(anchors):
        shares = [np.nanmean([precision[k, gold[i]] for k in range(num_classes) if k != pseudo[i]])
                  for i in np.flatnonzero(anchors)]
        return float(np.mean(shares)) if shares else float("nan")
    known = gold >= 0
    return expected(pool & known & (pseudo != gold)), expected(pool & known & (pseudo == gold))


def own_class_by_language(predictions: pa.Table, corpus: pa.Table, langs: Sequence[str], gamma: float,
                          num_classes: int) -> dict[str, tuple[float, float, float]]:
    """Per language, from a pseudo-label table (id, lang, pseudo_label,
    confidence) and the corpus' gold labels: ``own_class_negatives`` for
    wrong and right anchors, and the share of confident anchors that are wrong."""
    gold_of = dict(zip(corpus.column("id").to_pylist(), corpus.column("label").to_pylist()))
    gold = np.asarray([gold_of.get(i, -1) for i in predictions.column("id").to_pylist()])
    row_langs = np.asarray(predictions.column("lang").to_pylist())
    pseudo, conf = predictions.column("pseudo_label").to_numpy(), predictions.column("confidence").to_numpy()
    out = {}
    for lang in langs:
        m = (row_langs == lang) & (gold >= 0)
        confident = conf[m] >= gamma
        wrong_share = float((pseudo[m] != gold[m])[confident].mean()) if confident.any() else float("nan")
        out[lang] = (*own_class_negatives(pseudo[m], conf[m], gold[m], gamma, num_classes), wrong_share)
    return out
