"""Tokenizers built offline: WordPiece from a vocabulary file (the real
mBERT vocabulary), the embedded benchmark's word-level one, or a model's
own (``model.tokenizer``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from conlst_ray.data.synthetic import SyntheticBenchmark, write_vocab
from conlst_ray.models.e5 import resolve as resolve_e5

TINY_BERT = "tiny-bert"


def read_vocab(vocab_file: str | Path) -> dict[str, int]:
    """A WordPiece vocab file (one token a line) -> token -> id."""
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"model.tokenizer: vocab file not found: {vocab_file}")
    vocab: dict[str, int] = {}
    for line in vocab_file.read_text(encoding="utf-8").split("\n"):
        token = line.rstrip("\r")
        if token and token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def wordpiece_tokenizer(vocab_file: str | Path, lowercase: bool = False):
    """A BERT WordPiece tokenizer from a vocab file, built offline
    (e.g. the real mBERT vocabulary: cased, so lowercase=False).

    transformers 5 ignores ``vocab_file=`` (the tokenizer silently ends up
    with only the five special tokens), so the vocabulary is passed as a dict.
    """
    from transformers import BertTokenizerFast

    vocab = read_vocab(vocab_file)
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_file}: vocabulary lacks special token(s) {missing}")
    return BertTokenizerFast(vocab=vocab, do_lower_case=lowercase,
                             strip_accents=None if lowercase else False)


def synthetic_tokenizer(bench=None):
    """Word-level tokenizer over the embedded benchmark's vocabulary."""

    bench = bench or SyntheticBenchmark.from_config()
    with tempfile.TemporaryDirectory() as tmp:
        return wordpiece_tokenizer(write_vocab(bench, Path(tmp) / "vocab.txt"), lowercase=True)


def build_tokenizer(model_cfg, data_cfg=None):
    """Resolve ``model.tokenizer``: 'synthetic', a .txt vocab, a hub id/dir, or
    null for the model's own tokenizer."""
    spec = model_cfg.tokenizer
    if spec == "synthetic":

        return synthetic_tokenizer(SyntheticBenchmark.from_config(getattr(data_cfg, "synthetic", None),
                                                                  getattr(data_cfg, "task", None)))
    if spec is not None and spec.endswith(".txt"):
        return wordpiece_tokenizer(spec, model_cfg.lowercase)
    from conlst_ray.data.token_files import open_tokenizer

    name = resolve_e5(spec or model_cfg.name_or_path, model_cfg.cache_dir)
    if name == TINY_BERT:
        raise ValueError("model.tokenizer: tiny-bert has no tokenizer of its own; "
                         "set model.tokenizer to 'synthetic' or a vocab .txt file")
    return open_tokenizer(name)
