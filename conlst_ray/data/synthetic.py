"""The embedded synthetic cross-lingual benchmark: NLI-like pairs by default,
or single texts, with any number of classes (``data.task``).

Generated on demand from a seed (never committed as data), so the whole method
can be tried on a laptop without a download. It is built to be a fair test bed
for self-training, i.e. to reproduce the situation the CoNLST paper describes:

* **Concepts.** Three NLI-like classes. Each class owns a set of *cue*
  concepts (think "implies", "contradicts", "maybe"); there are *topic*
  concepts grouped into domains and *function* concepts (filler words).
* **Pairs.** The premise talks about one topic (topic + function words). The
  hypothesis repeats one or two premise topic words, adds filler, and carries
  two or three cues of its class, plus, in a share of pairs, one cue of another
  class (a distractor). The label is the class of the majority of cues, so a
  model that knows every cue form is right on nearly every pair: source
  accuracy is high. A few pairs (8 %) carry another label, as disputed pairs
  do in real NLI data; without them a source model ends up certain of
  everything, unlike a fine-tuned mBERT.
* **Languages.** One source language ``src`` and four targets graded by
  distance (``near``, ``mid``, ``far``, ``distant``). Every concept has a
  surface form per language. A target shares a fraction of its forms with the
  source (``shared``: 0.8 down to 0.3); the rest are forms the source model
  never saw. Some target cues are *false friends*: written like a source cue
  of another class (``false_friends``: 4 % to 16 % of cues). Distant targets
  also reverse the word order of more sentences (``reorder``).
* **Domain shift.** Source pairs come from five domains; target pairs come
  from those and five more (``domain_shift`` share), as MultiNLI's training
  genres vs XNLI's, so topic words are new too.

Why it exercises CoNLST: a source-only model classifies a target pair from the
cues whose forms it knows. Pairs with a known majority cue are right and
confident; pairs with no known cue are near chance and unconfident; pairs
whose only known cue is a distractor or a false friend are wrong *and
confident* -- noisy labels in the high-confidence band (the paper's Fig. 3).
Self-training can learn the unknown target forms from their co-occurrence
with known ones, so there is something to gain, more for distant targets.

**Other tasks.** The task (``data.task``) sets the number of classes C (each
class owns 16 cues, the label is still the majority cue class) and the form:
``pair`` as above, or ``single``: one text of topic words, the cues and
filler, like a review whose rating words decide its class (MARC) or a
ticket whose key words decide its queue. Languages, false friends and domain
shift are graded the same way. With the NLI task (pairs, 3 classes) the
corpora are exactly those of earlier versions.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import pyarrow as pa

from conlst_ray.data.schema import CorpusError, rows_to_table
from conlst_ray.data.task import Task


class SyntheticSizes(Protocol):
    """What the benchmark reads of ``data.synthetic`` (``SyntheticConfig`` in
    config/sections.py, a layer above: named by its shape, not imported)."""
    seed: int
    n_source_train: int
    n_unlabelled: int
    n_dev: int
    n_test: int


NUM_CLASSES = 3   # the NLI task's; a benchmark of another task has its own
SPLITS = ("train", "dev", "test", "unlabelled")


@dataclass(frozen=True)
class LanguageProfile:
    code: str
    shared: float          # share of concepts written as in the source
    false_friends: float   # share of cue concepts written like a source cue of another class
    reorder: float         # probability a sentence's word order is reversed
    domain_shift: float    # share of pairs drawn from the target-only domains


PROFILES = (
    LanguageProfile("src", 1.0, 0.0, 0.0, 0.0),
    LanguageProfile("near", 0.85, 0.03, 0.1, 0.5),
    LanguageProfile("mid", 0.7, 0.06, 0.3, 0.5),
    LanguageProfile("far", 0.55, 0.09, 0.5, 0.5),
    LanguageProfile("distant", 0.45, 0.12, 0.7, 0.5),
)
SOURCE_LANG = PROFILES[0].code
TARGET_LANGS = tuple(p.code for p in PROFILES[1:])

CUES_PER_CLASS = 16
NUM_DOMAINS = 10          # the source uses the first half
WORDS_PER_DOMAIN = 12
NUM_FUNCTION_WORDS = 20
DISTRACTOR_RATE = 0.35    # pairs with one cue of another class
ANNOTATION_NOISE = 0.08   # pairs whose gold label disagrees with their cues, as disputed NLI pairs

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _concepts(num_classes: int = NUM_CLASSES) -> dict[str, list[int]]:
    """Concept ids by kind: cues of class c, topics of domain d, function words."""
    ids = itertools.count()
    cues = {c: [next(ids) for _ in range(CUES_PER_CLASS)] for c in range(num_classes)}
    topics = {d: [next(ids) for _ in range(WORDS_PER_DOMAIN)] for d in range(NUM_DOMAINS)}
    function = [next(ids) for _ in range(NUM_FUNCTION_WORDS)]
    return {"cues": cues, "topics": topics, "function": function}


def _cue_class(concepts: dict) -> dict[int, int]:
    return {cid: c for c, cids in concepts["cues"].items() for cid in cids}


class _WordFactory:
    """Unique pronounceable pseudo-words (lower-case letters only, so a
    WordPiece tokenizer keeps each as one token)."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.used = rng, set()

    def new(self) -> str:
        while True:
            n = int(self.rng.integers(2, 4))
            word = "".join(self.rng.choice(list(_CONSONANTS)) + self.rng.choice(list(_VOWELS))
                           for _ in range(n))
            if word not in self.used:
                self.used.add(word)
                return word


def _groups(concepts: dict) -> list[list[int]]:
    """Concepts in groups that are shared in equal proportion: each class's
    cues, each domain's topic words, the function words."""
    return (list(concepts["cues"].values()) + list(concepts["topics"].values())
            + [concepts["function"]])


def _lexicons(seed: int, concepts: dict) -> dict[str, list[str]]:
    """Surface form of every concept in every language.

    Sharing is exact and nested: within each group, concepts are ranked once
    per seed and a language with share s keeps the source form of the first
    round(s * n); so a farther language knows a subset of what a nearer one
    knows and the grading by distance does not depend on luck.
    """
    rng = np.random.default_rng([seed, 0])
    words = _WordFactory(rng)
    cue_class = _cue_class(concepts)
    num_concepts = sum(len(group) for group in _groups(concepts))
    source = [words.new() for _ in range(num_concepts)]
    ranking = [[int(c) for c in rng.permutation(group)] for group in _groups(concepts)]
    lexicons = {SOURCE_LANG: source}
    for li, prof in enumerate(PROFILES[1:], start=1):
        lrng = np.random.default_rng([seed, 1, li])
        forms: list[Optional[str]] = [None] * num_concepts
        unshared_cues: list[int] = []
        for group in ranking:
            k = int(round(prof.shared * len(group)))
            for c in group[:k]:
                forms[c] = source[c]
            unshared_cues += [c for c in group[k:] if c in cue_class]
        # False friends: an unshared target cue spelled like the source form of
        # an (also unshared) cue of another class, so each form keeps one
        # meaning within the target language.
        n_ff = int(round(prof.false_friends * len(cue_class)))
        pool = [int(c) for c in lrng.permutation(unshared_cues)]
        for _ in range(n_ff):
            if not pool:
                break
            cid = pool.pop()
            donors = [o for o in pool if cue_class[o] != cue_class[cid]]
            if not donors:
                break
            donor = donors[0]
            pool.remove(donor)
            forms[cid] = source[donor]
        lexicons[prof.code] = [f if f is not None else words.new() for f in forms]
    return lexicons


class SyntheticBenchmark:
    """Deterministic corpora of the embedded benchmark; see module docstring."""

    def __init__(self, seed: int = 13, n_source_train: int = 6000, n_unlabelled: int = 2000,
                 n_dev: int = 600, n_test: int = 600, num_classes: int = NUM_CLASSES, pair: bool = True):
        if num_classes < 2:
            raise CorpusError(f"synthetic: needs at least 2 classes, got {num_classes}")
        self.seed, self.num_classes, self.pair = seed, num_classes, pair
        self.sizes = {"train": n_source_train, "unlabelled": n_unlabelled, "dev": n_dev, "test": n_test}
        self.concepts = _concepts(num_classes)
        self.cue_class = _cue_class(self.concepts)
        self.lexicons = _lexicons(seed, self.concepts)
        self.profiles = {p.code: p for p in PROFILES}

    @classmethod
    def from_config(cls, cfg: Optional[SyntheticSizes] = None, task=None) -> "SyntheticBenchmark":
        """The benchmark of ``data.synthetic`` for ``data.task`` (None: NLI)."""

        task = Task.of(task)
        if cfg is None:
            return _cached(13, 6000, 2000, 600, 600, task.num_classes, task.is_pair)
        return _cached(cfg.seed, cfg.n_source_train, cfg.n_unlabelled, cfg.n_dev, cfg.n_test,
                       task.num_classes, task.is_pair)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.profiles)

    def vocabulary(self) -> list[str]:
        """Every surface form of every language, in a fixed order."""
        seen: dict[str, None] = {}
        for lang in self.languages:
            for form in self.lexicons[lang]:
                seen.setdefault(form, None)
        return list(seen)

    def table(self, lang: str, split: str) -> pa.Table:
        if lang not in self.profiles:
            raise CorpusError(f"synthetic:{split}: unknown language {lang!r}; has {list(self.profiles)}")
        if split not in SPLITS:
            raise CorpusError(f"synthetic:{split}: unknown split; has {list(SPLITS)}")
        if split == "train" and lang != SOURCE_LANG:
            raise CorpusError(f"synthetic:train is the labelled source corpus; language {lang!r} has "
                              f"only unlabelled, dev and test splits")
        return _generate(self, lang, split)

    # -- generation ----------------------------------------------------------------
    def _topic(self, rng: np.random.Generator, prof: LanguageProfile, low: int, high: int) -> list:
        half = NUM_DOMAINS // 2
        if rng.random() < prof.domain_shift:
            domain = int(rng.integers(half, NUM_DOMAINS))
        else:
            domain = int(rng.integers(0, half))
        return list(rng.choice(self.concepts["topics"][domain], size=int(rng.integers(low, high)), replace=False))

    def _cues(self, rng: np.random.Generator, label: int) -> list:
        cues = list(rng.choice(self.concepts["cues"][label], size=int(rng.integers(1, 4)), replace=False))
        # A distractor only where it cannot tie: the majority of cues decides the label.
        if len(cues) >= 2 and rng.random() < DISTRACTOR_RATE:
            other = int(rng.choice([c for c in range(self.num_classes) if c != label]))
            cues.append(int(rng.choice(self.concepts["cues"][other])))
        return cues

    def _realise(self, rng: np.random.Generator, prof: LanguageProfile, concepts: list) -> str:
        words = [self.lexicons[prof.code][int(c)] for c in concepts]
        if rng.random() < prof.reorder:
            words.reverse()
        return " ".join(words)

    def _pair(self, rng: np.random.Generator, prof: LanguageProfile, label: int) -> tuple[str, str]:
        topic_words = self._topic(rng, prof, 4, 7)
        function = self.concepts["function"]
        premise = topic_words + list(rng.choice(function, size=int(rng.integers(2, 4))))
        rng.shuffle(premise)
        cues = self._cues(rng, label)
        echoed = list(rng.choice(topic_words, size=int(rng.integers(1, 3)), replace=False))
        hypothesis = cues + echoed + list(rng.choice(function, size=int(rng.integers(1, 3))))
        rng.shuffle(hypothesis)
        return self._realise(rng, prof, premise), self._realise(rng, prof, hypothesis)

    def _single(self, rng: np.random.Generator, prof: LanguageProfile, label: int) -> tuple[str, None]:
        """One text: a few topic words, the cues of its class, filler."""
        words = (self._topic(rng, prof, 3, 6) + self._cues(rng, label)
                 + list(rng.choice(self.concepts["function"], size=int(rng.integers(2, 4)))))
        rng.shuffle(words)
        return self._realise(rng, prof, words), None


_SPLIT_STREAM = {s: i for i, s in enumerate(SPLITS)}


def _generate(bench: SyntheticBenchmark, lang: str, split: str) -> pa.Table:
    prof = bench.profiles[lang]
    n = bench.sizes[split]
    lang_idx = bench.languages.index(lang)
    rng = np.random.default_rng([bench.seed, 2, lang_idx, _SPLIT_STREAM[split]])
    c = bench.num_classes
    labels = np.arange(n) % c  # balanced, like XNLI
    rng.shuffle(labels)
    make = bench._pair if bench.pair else bench._single
    cols = {"id": [], "lang": [], "text": [], "text_pair": [], "label": []}
    for i, label in enumerate(labels):
        # A disputed row: its text speaks for another class than its gold
        # label. Drawn this way, the gold labels stay balanced.
        cue_class = int(label)
        if rng.random() < ANNOTATION_NOISE:
            cue_class = (cue_class + int(rng.integers(1, c))) % c
        text, text_pair = make(rng, prof, cue_class)
        cols["id"].append(f"{lang}-synthetic_{split}-{i}")
        cols["lang"].append(lang)
        cols["text"].append(text)
        cols["text_pair"].append(text_pair)
        cols["label"].append(int(label))
    return rows_to_table(cols)


@functools.lru_cache(maxsize=8)
def _cached(seed, n_train, n_unlab, n_dev, n_test, num_classes=NUM_CLASSES, pair=True) -> SyntheticBenchmark:
    return SyntheticBenchmark(seed, n_train, n_unlab, n_dev, n_test, num_classes, pair)


def write_vocab(bench: SyntheticBenchmark, path: str | Path) -> Path:
    """A WordPiece vocabulary file (specials first, as BERT's) covering every
    surface form of the benchmark, so a tokenizer can be built offline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(specials + bench.vocabulary()) + "\n", encoding="utf-8")
    return path


def describe(bench: Optional[SyntheticBenchmark] = None) -> str:
    bench = bench or SyntheticBenchmark.from_config()
    lines = ["| lang | shared forms | false friends | reversed order | new-domain pairs |",
             "|---|---|---|---|---|"]
    for p in PROFILES:
        lines.append(f"| {p.code} | {p.shared:.0%} | {p.false_friends:.0%} | {p.reorder:.0%} | {p.domain_shift:.0%} |")
    return "\n".join(lines)
