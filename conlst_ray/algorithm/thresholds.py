"""Selection of clean pseudo-labels for self-training (Eq. 14's indicator).

Three interchangeable rules with one interface, as USB swaps FixMatch for
FlexMatch: ``observe(q)`` takes an iteration's labelling of every target row
(and applies the rule's own policy, e.g. a relative tau), ``thresholds``,
``mask``, ``describe`` (what a report shows), ``state_dict``. The rules: a fixed
threshold, FlexMatch's class-wise dynamic thresholds (Zhang et al., 2021),
and class-wise quantiles of the confidences (conlst_ray's rule for a source
model whose confidences do not match an absolute tau; see docs/REAL_XNLI.md:
FlexMatch on such a model sets one class's threshold to 0).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

UNUSED = -1


class FixedThresholds:
    """Every class uses the fixed threshold tau (FixMatch)."""

    def __init__(self, num_classes: int, tau: float, quantile: Optional[float] = None):
        self.num_classes, self.tau, self.quantile = num_classes, tau, quantile

    def observe(self, q: np.ndarray) -> None:
        if self.quantile:  # ssl.threshold_quantile: tau relative to this iteration's confidences
            self.tau = relative_tau(q.max(-1), self.quantile)

    def update(self, sample_index, predictions, confident) -> None:
        pass

    def describe(self) -> dict:
        return {"tau": float(self.tau), "thresholds": rounded(self.thresholds())}

    def thresholds(self) -> torch.Tensor:
        return torch.full((self.num_classes,), self.tau)

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_by_class(probs, self.thresholds())

    def state_dict(self) -> dict:
        return {"tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.tau = state["tau"]


class FlexMatchThresholds:
    """FlexMatch's class-wise thresholds (curriculum pseudo-labelling):

        sigma_c   = number of unlabelled samples whose latest confident
                    prediction (confidence > tau) is class c
        beta_c    = sigma_c / max(max_c sigma_c, N_unused)     (with warm-up)
                    sigma_c / max_c sigma_c                    (without)
        T_c       = M(beta_c) * tau,   M(x) = x / (2 - x)

    N_unused counts samples never predicted confidently. With warm-up, every
    threshold is 0 before any confident prediction: FlexMatch then learns from
    all samples, and thresholds rise as the model becomes confident. Without
    warm-up (conlst_ray's default: self-training starts from a trained model)
    the best-learned class keeps tau, and with no confident prediction at all
    every class does.

    ``update`` takes (sample index, prediction, confident) for a batch. Feed it
    the union of all DDP workers' batches and every worker holds identical
    thresholds: the state is "latest confident prediction per sample", so the
    order and grouping of the updates do not matter.
    """

    def __init__(self, num_samples: int, num_classes: int, tau: float, warmup: bool = True,
                 quantile: Optional[float] = None):
        self.num_classes, self.tau, self.warmup, self.quantile = num_classes, tau, warmup, quantile
        self.predictions = torch.full((num_samples,), UNUSED, dtype=torch.long)

    def observe(self, q: np.ndarray) -> None:
        """Every target row's latest prediction, confident when above tau
        (with ``quantile``: tau = that quantile of this iteration's confidences)."""
        conf, pred = q.max(-1), q.argmax(-1)
        if self.quantile:
            self.tau = relative_tau(conf, self.quantile)
        self.update(np.arange(len(q)), pred, conf > self.tau)

    def describe(self) -> dict:
        return {"tau": float(self.tau), "thresholds": rounded(self.thresholds())}

    def update(self, sample_index, predictions, confident) -> None:
        idx = torch.as_tensor(sample_index, dtype=torch.long).cpu()
        conf = torch.as_tensor(confident, dtype=torch.bool).cpu()
        self.predictions[idx[conf]] = torch.as_tensor(predictions, dtype=torch.long).cpu()[conf]

    def sigma(self) -> torch.Tensor:
        used = self.predictions[self.predictions != UNUSED]
        return torch.bincount(used, minlength=self.num_classes).float()

    def beta(self) -> torch.Tensor:
        sigma = self.sigma()
        norm = sigma.max()
        if self.warmup:
            norm = torch.maximum(norm, (self.predictions == UNUSED).sum().float())
            return sigma / norm if norm > 0 else torch.zeros_like(sigma)
        # Without warm-up, no confident prediction at all is 0/0: every class
        # keeps tau (select only what passes tau) rather than 0 (select all).
        return sigma / norm if norm > 0 else torch.ones_like(sigma)

    def thresholds(self) -> torch.Tensor:
        beta = self.beta()
        return beta / (2.0 - beta) * self.tau

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_by_class(probs, self.thresholds())

    def state_dict(self) -> dict:
        return {"predictions": self.predictions.clone(), "tau": self.tau, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.predictions = state["predictions"].clone()
        self.tau, self.warmup = state["tau"], state["warmup"]


class ClassQuantileThresholds:
    """T_c = the q-quantile of the confidences of the rows predicted as class c
    in this iteration's labelling. Every class keeps its most confident
    (1 - q) share, so a class can neither take all of its rows (FlexMatch's
    T_c = 0 when no row of c passes tau) nor none, and the selected share is
    1 - q whatever the model's confidence scale. A class nothing is predicted
    as gets threshold 1 (it has no rows to select)."""

    def __init__(self, num_samples: int, num_classes: int, quantile: float):
        self.num_classes, self.quantile = num_classes, quantile
        self._thresholds = torch.ones(num_classes)

    def observe(self, q: np.ndarray) -> None:
        self.update(np.arange(len(q)), q.argmax(-1), None, q.max(-1))

    def describe(self) -> dict:
        return {"tau": None, "thresholds": rounded(self.thresholds())}

    def update(self, sample_index, predictions, confident, confidence=None) -> None:
        if confidence is None:
            raise ValueError("ClassQuantileThresholds.update needs the confidences")
        pred = torch.as_tensor(predictions, dtype=torch.long).cpu()
        conf = torch.as_tensor(confidence, dtype=torch.float64).cpu()
        for c in range(self.num_classes):
            mine = conf[pred == c]
            self._thresholds[c] = float(torch.quantile(mine, self.quantile)) if len(mine) else 1.0

    def thresholds(self) -> torch.Tensor:
        return self._thresholds.clone()

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_by_class(probs, self.thresholds())

    def state_dict(self) -> dict:
        return {"thresholds": self._thresholds.clone(), "quantile": self.quantile}

    def load_state_dict(self, state: dict) -> None:
        self._thresholds, self.quantile = state["thresholds"].clone(), state["quantile"]


class LanguageClassTop:
    """Equal counts per (language, predicted class): in each language every
    class keeps its k most confident rows, k = (1 - q) x the language's rows
    / C (all of them when it has fewer). Pooling every language per class
    (``class_quantile``) lets the languages the model is surest of fill the
    selection; this rule keeps each language and class at its share. The
    selection belongs to the rows observed: ``mask`` expects the same q."""

    def __init__(self, num_classes: int, quantile: float, langs):
        self.num_classes, self.quantile = num_classes, quantile
        self.langs = np.asarray(langs)
        self._selected = np.zeros(len(self.langs), dtype=bool)
        self._thresholds = torch.ones(num_classes)
        # language -> class shares of the selection (ssl.prior: the estimated prior); default equal
        self.shares: dict = {}

    def observe(self, q: np.ndarray) -> None:
        conf, pred = q.max(-1), q.argmax(-1)
        selected = np.zeros(len(q), dtype=bool)
        lowest = np.ones(self.num_classes)
        for lang in np.unique(self.langs):
            rows = np.flatnonzero(self.langs == lang)
            shares = self.shares.get(str(lang), np.full(self.num_classes, 1.0 / self.num_classes))
            for c in range(self.num_classes):
                k = int((1 - self.quantile) * len(rows) * shares[c])
                mine = rows[pred[rows] == c]
                top = mine[np.argsort(-conf[mine], kind="stable")[:k]]
                selected[top] = True
                if len(top):
                    lowest[c] = min(lowest[c], float(conf[top].min()))
        self._selected, self._thresholds = selected, torch.as_tensor(lowest, dtype=torch.float32)

    def update(self, sample_index, predictions, confident, confidence=None) -> None:
        pass

    def describe(self) -> dict:
        return {"tau": None, "thresholds": rounded(self.thresholds())}

    def thresholds(self) -> torch.Tensor:
        """The lowest confidence kept per class (over the languages)."""
        return self._thresholds.clone()

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(probs) != len(self._selected):
            raise ValueError("lang_class_top selects among the rows it observed; mask() got other rows")
        return torch.as_tensor(self._selected), probs.argmax(-1)

    def state_dict(self) -> dict:
        return {"thresholds": self._thresholds.clone(), "quantile": self.quantile}

    def load_state_dict(self, state: dict) -> None:
        self._thresholds, self.quantile = state["thresholds"].clone(), state["quantile"]


def mask_by_class(probs: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, pseudo-labels): a sample is kept when its confidence reaches the
    threshold of its predicted class."""
    conf, pred = probs.max(-1)
    return conf >= thresholds.to(probs.device)[pred], pred


def relative_tau(confidence, quantile: float) -> float:
    """``ssl.threshold_quantile``: tau as a quantile of the model's own
    confidences this iteration, for a source model whose confidences never
    reach an absolute tau (see docs/REAL_XNLI.md)."""
    return float(np.quantile(np.asarray(confidence, dtype=np.float64), quantile))


def rounded(thresholds: torch.Tensor) -> list[float]:
    return [round(float(t), 4) for t in thresholds]


def make_thresholds(ssl_cfg, num_samples: int, num_classes: int, langs=None):
    """The rule named by ``ssl.thresholding`` (``langs``: each row's language,
    for lang_class_top)."""
    if ssl_cfg.thresholding == "lang_class_top":
        return LanguageClassTop(num_classes, ssl_cfg.threshold_quantile or 0.5,
                                langs if langs is not None else np.zeros(num_samples, dtype="<U1"))
    if ssl_cfg.thresholding == "fixed":
        return FixedThresholds(num_classes, ssl_cfg.threshold, ssl_cfg.threshold_quantile)
    if ssl_cfg.thresholding == "class_quantile":
        return ClassQuantileThresholds(num_samples, num_classes, ssl_cfg.threshold_quantile or 0.5)
    return FlexMatchThresholds(num_samples, num_classes, ssl_cfg.threshold, ssl_cfg.flexmatch_warmup,
                               ssl_cfg.threshold_quantile)
