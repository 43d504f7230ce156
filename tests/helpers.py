"""Helpers the tests share; none of them is part of the library."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from conlst_ray.algorithm.conl import ConlBatch, build_conl_batch, plan_negatives
from conlst_ray.algorithm.negatives import NegativePool
from conlst_ray.data.schema import ROW_SCHEMA
from conlst_ray.data.synthetic import SOURCE_LANG, SyntheticBenchmark
from conlst_ray.data.task import NLI, UNKNOWN_LABEL, Task
from conlst_ray.models.translation import CODE_TABLES
from conlst_ray.ray_jobs.sharded import read_outputs
from conlst_ray.training.batches import Encoded


def tiny_translation_model(path, family: str, words: Optional[Sequence[str]] = None, arch: str = "mbart"):
    """A tiny seq2seq model and word-level tokenizer with ``family``'s language
    codes, built from a config (no download): its output is meaningless but it
    exercises the real translation pipeline. ``arch``: mbart or m2m100."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        M2M100Config,
        M2M100ForConditionalGeneration,
        MBartConfig,
        MBartForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    codes = sorted(set(CODE_TABLES[family].values()))
    words = list(dict.fromkeys(words or ["a", "b", "c"]))
    vocab = {t: i for i, t in enumerate(specials + codes + [w for w in words if w not in codes])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", additional_special_tokens=codes)
    import torch

    torch.manual_seed(0)  # the same meaningless model in every run
    shape = dict(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    model = (MBartForConditionalGeneration(MBartConfig(**shape)) if arch == "mbart"
             else M2M100ForConditionalGeneration(M2M100Config(**shape)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def cue_visibility(bench: SyntheticBenchmark, lang: str) -> dict[str, float]:
    """Diagnostics for the README: share of cue forms a source model has seen,
    and share of cues that are false friends."""
    src = set(bench.lexicons[SOURCE_LANG][c] for c in bench.cue_class)
    lex = bench.lexicons[lang]
    seen = [lex[c] in src for c in bench.cue_class]
    false = [lex[c] in src and lex[c] != bench.lexicons[SOURCE_LANG][c] for c in bench.cue_class]
    return {"cue_forms_known": float(np.mean(seen)), "false_friends": float(np.mean(false))}


def without_labels(table: pa.Table) -> pa.Table:
    """The same rows with every label set to unknown (-1): what a truly
    unlabelled target corpus looks like to the training stages."""
    idx = table.schema.get_field_index("label")
    return table.set_column(idx, ROW_SCHEMA.field("label"),
                            pa.array([UNKNOWN_LABEL] * table.num_rows, pa.int64()))


def parse_label(label: Any, task: Task = NLI) -> int:
    """A label as found in a file -> its id in ``task`` (default NLI); see data/task.py."""
    return task.label_id(label)


def make_conl_batch(target: Encoded, index: np.ndarray, q: np.ndarray, pool: NegativePool, cfg, pad_id: int,
                    generator: Optional[torch.Generator] = None, source: Optional[Encoded] = None,
                    source_index: Optional[np.ndarray] = None) -> ConlBatch:
    """``plan_negatives`` then ``build_conl_batch`` for one process."""
    comp, drawn = plan_negatives(target, index, q, pool, cfg, generator)
    return build_conl_batch(target, index, comp, drawn, pad_id, source, source_index)


def read_translations(out_root: str | Path, lang: Optional[str] = None) -> pa.Table:
    """Finished translations; for translate-train output, ``lang`` selects a target."""
    table = read_outputs(out_root)
    if lang is not None:
        table = table.filter(pc.equal(table.column("lang"), lang))
    return table


@functools.cache
def private_mounts() -> bool:
    """Whether this machine lets a test mount a tmpfs of its own (a private
    user and mount namespace: root is not needed): the full-disk tests and
    the unshared node; asked once per session."""
    import shutil
    import subprocess

    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@contextlib.contextmanager
def logged():
    """The lines conlst_ray logs inside the block, in order: the records its
    package logger receives, from any thread of this process."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger("conlst_ray")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
