"""Tokenise a sharded corpus once, as Ray tasks (one per shard).

    ROOT/lang=xx/shard-NNNNN.parquet            (corpus cache, translations)
      -> ROOT/tokens-<stamp>/lang=xx/shard-NNNNN.arrow   + _tokenizer.json

``stamp`` names the tokenizer (its files' content) and the truncation
length, so token ids of another tokenizer live in another folder and are
never read by mistake; ``open_token_rows`` checks the stamp again. Each
language folder records what its rows were read from; when that changes
(the corpus was rebuilt, the translations recomputed) it is tokenised
again. A shard file appears only when complete (written and renamed), so an
interrupted job resumes where it stopped.

Pseudo-labelling and every training stage read these files; nothing else
tokenises corpus rows. ``CONLST_RAY_TOKENIZE_LOG`` (a file path) makes every
tokenisation append a line (pid, rows, shard), which the tokenise-once
benchmark counts.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq
import ray

from conlst_ray.data.token_files import TOKENIZER_FILE, tokenize_pairs, write_token_file
from conlst_ray.models.tokenizers import load_tokenizer, special_ids, tokenizer_stamp
from conlst_ray.ray_jobs.corpus_cache import corpus_task
from conlst_ray.storage import integrity
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

log = logging.getLogger(__name__)

SOURCE_FILE = "_source.json"
LOG_ENV = "CONLST_RAY_TOKENIZE_LOG"


def tokens_root(root: str | Path, tokenizer_dir: str, max_length: int) -> Path:
    return Path(root) / f"tokens-{tokenizer_stamp(tokenizer_dir, max_length)}"


def token_file(tokens: str | Path, shard: str | Path) -> Path:
    """The token file of a cached shard ``ROOT/lang=xx/shard-N.parquet``."""
    shard = Path(shard)
    return Path(tokens) / shard.parent.name / f"{shard.stem}.arrow"


def tokenize_shard(src: str, dst: str, tokenizer_dir: str, max_length: int) -> int:
    """Read one Parquet shard, tokenise it, write the Arrow file (a Ray task)."""

    table = pq.read_table(storage.fetch(src))
    out = tokenize_pairs(load_tokenizer(tokenizer_dir), table, max_length)
    write_token_file(out, storage.here(dst))
    integrity.seal(storage.here(dst))
    storage.publish(dst)
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {out.num_rows} {src}\n")
    return out.num_rows


def tokenize_corpus(root: str | Path, langs: list[str], tokenizer_dir: str, max_length: int,
                    sources: Optional[dict[str, object]] = None, cpus_per_task: float = 0.25) -> Path:
    """Token files for every shard of ``langs`` under ``root`` (see the
    module docstring); ``sources``: per language, what its rows were read
    from (a manifest fingerprint, a job's provenance) -- a change re-tokenises
    that language. Returns the tokens folder."""

    out = tokens_root(root, tokenizer_dir, max_length)
    pending = []
    for lang in langs:
        src_dir, dst_dir = Path(root) / f"lang={lang}", out / f"lang={lang}"
        made_from = json.dumps((sources or {}).get(lang), sort_keys=True, default=str)
        recorded = storage.fetch(dst_dir / SOURCE_FILE)
        if recorded.is_file() and recorded.read_text(encoding="utf-8") != made_from:
            log.info(f"[tokenize] {lang}: its rows changed since they were tokenised: again")
            storage.remove(dst_dir)
        shards = [src_dir / n for n in storage.listdir(src_dir) if n.startswith("shard-") and n.endswith(".parquet")]
        if not shards:
            raise FileNotFoundError(f"{src_dir}: no shards to tokenise")
        atomic_write_text(recorded, made_from)
        storage.publish(recorded)
        done = set(storage.listdir(dst_dir))
        for s in shards:
            made = token_file(out, s)
            if made.name in done and (problem := integrity.discard_if_damaged(made)):
                log.info(f"[tokenize] {lang}: {problem}: tokenising that shard again")
                done.discard(made.name)
        pending += [(str(s), str(token_file(out, s))) for s in shards if token_file(out, s).name not in done]
    if pending:
        task = corpus_task(tokenize_shard, cpus_per_task, max_retries=1)
        rows = sum(ray.get([task.remote(src, dst, str(tokenizer_dir), max_length) for src, dst in pending]))
        log.info(f"[tokenize] {len(pending)} shard(s), {rows} rows -> {out}")
    if not storage.exists(out / TOKENIZER_FILE):  # the stamp names the tokenizer: written once per folder
        tok = load_tokenizer(str(tokenizer_dir))
        meta = {"stamp": out.name.split("-", 1)[1], "tokenizer": getattr(tok, "name_or_path", str(tokenizer_dir)),
                "max_length": max_length, **special_ids(tok)}
        atomic_write_text(out / TOKENIZER_FILE, json.dumps(meta, indent=2))
        storage.publish(out / TOKENIZER_FILE)
    return out


def tokenize_cached_corpus(root: str | Path, manifests: dict[str, dict], tokenizer_dir: str, max_length: int,
                           cpus_per_task: float = 0.25) -> Path:
    """``tokenize_corpus`` for the languages of a corpus cache, each re-tokenised
    when its manifest's fingerprint (what its rows were read from) changes."""
    return tokenize_corpus(root, list(manifests), tokenizer_dir, max_length,
                           {lang: m.get("fingerprint") for lang, m in manifests.items()}, cpus_per_task)
