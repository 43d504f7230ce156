"""Complementary labels of pseudo-labelled target samples (Eq. 4) and the
negative pool they index into (Eq. 5)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from conlst_ray.data.schema import unique_in_order

log = logging.getLogger(__name__)

POOLED = "*"  # language key of the pool shared by all target languages


def complementary_labels(q: torch.Tensor, gamma: float,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 4: for a confident sample (max q >= gamma), a class drawn uniformly
    from the classes other than argmax q -- we trust that it is not of those
    classes, but not which one it is; for an unconfident sample, argmin q --
    the one class the model is surest it is not."""
    conf, top = q.max(-1)
    shift = torch.randint(1, q.shape[-1], top.shape, generator=generator, device="cpu").to(q.device)
    return torch.where(conf >= gamma, (top + shift) % q.shape[-1], q.argmin(-1))


def complementary_sets(q: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 4 as printed, with set semantics: [B, C] booleans marking each
    sample's complementary labels. A confident sample (max q >= gamma) gets
    every class except argmax q; an unconfident one gets {argmin q}."""
    conf, top = q.max(-1)
    confident = ~torch.nn.functional.one_hot(top, q.shape[-1]).bool()
    least = torch.nn.functional.one_hot(q.argmin(-1), q.shape[-1]).bool()
    return torch.where((conf >= gamma).unsqueeze(-1), confident, least)


def relative_gamma(confidence, langs, quantile: float, classes=None) -> tuple[np.ndarray, dict]:
    """``conl.gamma_quantile``: gamma of Eq. 4-5 per language as a quantile of
    that language's pseudo-label confidences, for a source model that never
    reaches the paper's absolute 0.9 (its pool of negatives would be empty).
    With ``classes`` (each row's pseudo-label; ``conl.gamma_groups=class``)
    the quantile is taken within each (language, class): an under-confident
    class (XNLI's neutral) then has confident members too, where one gamma
    per language left it none. Returns (gamma of every row, group -> gamma;
    a group is a language, or ``lang/class``)."""
    conf = np.asarray(confidence, dtype=np.float64)
    groups = np.asarray(langs).astype(str)  # vectorised: a million rows are not a million Python strings
    if classes is not None:
        groups = np.char.add(np.char.add(groups, "/"), np.asarray(classes).astype(str))
    gamma = np.zeros(len(conf), dtype=np.float64)
    by_group = {}
    for group in unique_in_order(groups):
        rows = groups == group
        by_group[str(group)] = float(np.quantile(conf[rows], quantile))
        gamma[rows] = by_group[str(group)]
    return gamma, by_group


def split_slots(k: int, n: int) -> list[int]:
    """K negative slots shared as evenly as possible by n complementary classes
    (so with K >= n every class of the set occurs)."""
    return [k // n + (j < k % n) for j in range(n)]


@dataclass
class Predictions:
    """The pseudo-label and confidence of each sample, and its language."""
    labels: Sequence[int]
    confidence: Sequence[float]
    langs: Optional[Sequence[str]] = None


class NegativePool:
    """Eq. 5: the confident target samples (max q >= gamma), indexed by
    pseudo-label, so that K negatives with a given pseudo-label are drawn in
    O(K) rather than by scanning the corpus.

    Members are kept per (language, class) and, for joint multi-target
    training, also per (POOLED, class) across all languages; ``scope`` picks
    which a draw uses.

    Policy when a class is short: draws are uniform *with replacement* (O(K)),
    so a class with 1 <= n < K members still yields K negatives (repeats are
    encoded once by the CoNL step). With ``min_members`` > n the class yields
    none. A class with no member yields none: its anchors get index -1 and
    contribute no contrastive term (Eq. 6 with an empty sum is 0). Both cases
    are counted in ``stats`` and logged once per class.
    """

    def __init__(self, sample_index: Sequence[int], predicted: "Predictions", gamma, num_classes: int, seed: int = 0,
                 min_members: int = 1):
        idx = np.asarray(sample_index, dtype=np.int64)
        labels = np.asarray(predicted.labels, dtype=np.int64)
        keep = np.asarray(predicted.confidence, dtype=np.float64) >= np.asarray(gamma)  # a scalar, or one per sample
        lang_arr = np.asarray(predicted.langs) if predicted.langs is not None else np.full(len(idx), POOLED)
        self.num_classes, self.gamma, self.min_members = num_classes, gamma, min_members
        self.members: dict[tuple[str, int], np.ndarray] = {}
        for c in range(num_classes):
            sel = keep & (labels == c)
            self.members[(POOLED, c)] = idx[sel]
            for lang in set(unique_in_order(lang_arr[sel])) - {POOLED}:
                self.members[(lang, c)] = idx[sel & (lang_arr == lang)]
        self.rng = np.random.default_rng(seed)
        self.stats: Counter = Counter()
        self._warned: set = set()

    def size(self, lang: str = POOLED, cls: Optional[int] = None) -> int:
        classes = range(self.num_classes) if cls is None else [cls]
        return sum(len(self.members.get((lang, c), ())) for c in classes)

    def draw(self, complementary: Sequence[int], k: int, langs: Optional[Sequence[str]] = None,
             scope: str = "language") -> np.ndarray:
        """K negatives per anchor whose pseudo-label equals the anchor's one
        complementary label (see ``draw_sets``). Returns [B, K], -1 = none."""
        comp = np.asarray(complementary, dtype=np.int64)
        sets = np.zeros((len(comp), self.num_classes), dtype=bool)
        sets[np.arange(len(comp)), comp] = True
        return self.draw_sets(sets, k, langs, scope)

    def draw_sets(self, sets, k: int, langs: Optional[Sequence[str]] = None, scope: str = "language",
                  bank_per_class: Optional[int] = None) -> np.ndarray:
        """K negatives per anchor whose pseudo-labels lie in the anchor's set
        of complementary labels (``sets`` [B, C], Eq. 4-5), the K slots split
        evenly over the classes of the set that have members, from the
        anchor's language (scope 'language') or all languages ('pooled').

        ``bank_per_class``: draw once, for this call, a shared bank of that many
        members per (language, class) needed, and take every anchor's
        negatives from it -- one step then encodes the bank once instead of
        K fresh samples per anchor. Without it each anchor draws from the
        whole pool (with replacement, O(K)). Returns [B, K], -1 = none."""
        sets = np.asarray(sets, dtype=bool)
        out = np.full((len(sets), k), -1, dtype=np.int64)
        bank: dict = {}
        for i, row in enumerate(sets):
            lang = POOLED if scope == "pooled" or langs is None else langs[i]
            classes = [int(c) for c in np.flatnonzero(row)]
            usable = []
            for c in classes:
                members = self.members.get((lang, c), np.empty(0, np.int64))
                if len(members) < max(self.min_members, 1):
                    self._short(lang, c, len(members))
                    continue
                if bank_per_class:
                    if (lang, c) not in bank:
                        bank[(lang, c)] = np.unique(members[self.rng.integers(0, len(members), bank_per_class)])
                    members = bank[(lang, c)]
                usable.append(members)
            if not usable:
                self.stats["anchors_without_negatives"] += 1
                continue
            slots = []
            for members, n in zip(usable, split_slots(k, len(usable))):
                if n == 0:
                    continue
                if len(members) < n:
                    self.stats["short_class_draws"] += 1
                replace = len(members) < n or not bank_per_class
                pick = (members[self.rng.integers(0, len(members), size=n)] if replace
                        else self.rng.choice(members, size=n, replace=False))
                slots.append(pick)
            out[i] = np.concatenate(slots)
            self.stats["draws"] += 1
        return out

    def _short(self, lang: str, cls: int, n: int) -> None:
        self.stats["short_class_skips"] += 1
        if (lang, cls) not in self._warned:
            self._warned.add((lang, cls))
            log.warning("negative pool: class %d of language %s has %d confident members; "
                        "no negatives are drawn from it", cls, lang, n)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.stats = Counter(state["stats"])


def unique_negatives(negative_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate a batch's negatives: returns (unique sample indices, the
    [B, K] index remapped into them, -1 kept), so each is encoded once."""
    valid = negative_index >= 0
    uniq, inverse = np.unique(negative_index[valid], return_inverse=True)
    remapped = np.full_like(negative_index, -1)
    remapped[valid] = inverse
    return uniq, remapped
