"""What a training stage reads, tokenised once.

Driver (``prepare_stage_tokens``, before the TorchTrainer starts): every
corpus a stage reads -- labelled source rows, the unlabelled target rows,
their back-translations, the dev sets of the per-epoch evaluation -- is
sharded into the corpus cache and tokenised by Ray tasks into memory-mapped
Arrow files (``ray_jobs/tokens.py``); all of it cached, so the stages of a
run and the per-language sub-runs share one tokenisation.

Worker (``read_stage_data``): maps those files (``token_rows.open_token_rows``)
after checking they were made by the worker's tokenizer. No worker calls a
tokenizer on corpus rows, and none holds the token lists as Python objects:
8 workers on a node share one copy of the ids in the page cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conlst_ray.config.keys import get
from conlst_ray.config.provenance import read_json
from conlst_ray.config.stages import BACKTRANSLATION, BY_NAME
from conlst_ray.data.corpora import CORPUS_FOLDERS
from conlst_ray.data.token_files import AlignedRows, TokenRows, open_token_rows

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


# -- driver ----------------------------------------------------------------------------------

def _cached_tokens(key: str, cfg: "Config", corpus_dir: Path, tokenizer_dir: str, log) -> list:
    """The corpus of config key ``key``, sharded into its cache folder and
    tokenised (both cached); [token folder, languages]."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus

    root = corpus_dir / CORPUS_FOLDERS[key]
    manifests = ingest_corpora(get(cfg, key), cfg.data.corpus_langs(key), root, cfg.data, cfg.resources.cpus_per_task,
                               log, max_rows=cfg.data.corpus_max_rows(key))
    tokens = tokenize_cached_corpus(root, manifests, tokenizer_dir, cfg.data.max_length,
                                    cfg.resources.cpus_per_task, log)
    return [str(tokens), list(manifests)]


@dataclass(frozen=True)
class StageInputs:
    """What a stage reads besides its starting model."""
    target_corpus: Optional[str] = None     # the sharded unlabelled target rows (CoNL, self-training)
    pseudo_labels: Optional[str] = None     # the source model's q of those rows (CoNL)
    translations: Optional[str] = None      # their back-translations (self-training, when set)
    langs: Optional[list] = None            # target languages read (default: every one in the corpus)
    corpus_dir: Optional[str] = None        # the token cache (fit_stage's default: the run's corpus/)
    before_step: Optional[Callable[[int], None]] = None  # a test's seam: runs before every step (faults)


def prepare_stage_tokens(stage: str, cfg: "Config", tokenizer_dir: str, inputs: StageInputs, log=print) -> dict:
    """Tokenise (or find tokenised) everything ``stage`` reads, cached under
    ``inputs.corpus_dir``; returns name -> [token folder, languages]."""
    from conlst_ray.ray_jobs.corpus_cache import read_manifest
    from conlst_ray.ray_jobs.sharded import PROVENANCE
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus, tokenize_corpus

    d, corpus_dir = cfg.data, Path(inputs.corpus_dir)
    target_corpus, translations, langs = inputs.target_corpus, inputs.translations, inputs.langs
    out = {"source": _cached_tokens("data.source_train", cfg, corpus_dir, tokenizer_dir, log)}
    if target_corpus:
        root = Path(target_corpus)
        t_langs = sorted(langs or [p.name[5:] for p in root.glob("lang=*")])
        manifests = {lang: read_manifest(root, lang) or {} for lang in t_langs}
        out["target"] = [str(tokenize_cached_corpus(root, manifests, tokenizer_dir, d.max_length,
                                                    cfg.resources.cpus_per_task, log)), t_langs]
    if BACKTRANSLATION in BY_NAME[stage].reads and translations and cfg.ssl.use_backtranslation:
        root = Path(translations)
        bt_langs = sorted(p.name[5:] for p in root.glob("lang=*") if any(p.glob("shard-*.parquet")))
        if bt_langs:
            made_from = {lang: read_json(root / f"lang={lang}" / PROVENANCE) for lang in bt_langs}
            out["translations"] = [str(tokenize_corpus(root, bt_langs, tokenizer_dir, d.max_length, made_from,
                                                       cfg.resources.cpus_per_task, log)), bt_langs]
    if d.eval_during_training:
        out["eval"] = [_cached_tokens(key, cfg, corpus_dir, tokenizer_dir, log)
                       for key in ("data.source_dev", "data.target_dev") if get(cfg, key)]
    return out


# -- worker ----------------------------------------------------------------------------------

def read_stage_data(tokens: dict, stamp: str) -> tuple[TokenRows, Optional[TokenRows]]:
    """Source rows (labelled) and target rows (labels hidden: ``gold`` keeps
    them for analysis only, never trained on), memory-mapped; ``tokens``:
    what ``prepare_stage_tokens`` returned."""
    source = open_token_rows(*tokens["source"], expect_stamp=stamp).labelled()
    target = None
    if "target" in tokens:
        target = open_token_rows(*tokens["target"], expect_stamp=stamp)
        target.gold = target.labels.copy()
        target.labels[:] = -1
    return source, target


def read_eval_rows(tokens: dict, stamp: str) -> list[TokenRows]:
    return [open_token_rows(*entry, expect_stamp=stamp) for entry in tokens.get("eval", [])]


def attach_frozen(rows: Optional[TokenRows], entry: list, model, cfg: "Config", device, log=print) -> None:
    """model.cache_frozen: give ``rows`` (read from the token folder of
    ``entry`` = [folder, languages]) their states after the frozen layers,
    read from beside the token files or computed there once."""
    if rows is None or not cfg.model.cache_frozen or not len(rows):
        return
    from conlst_ray.storage import mirror as storage
    from conlst_ray.training.frozen_cache import FrozenRun, cached_states

    folder, langs = entry
    run = FrozenRun(cfg.model.freeze_layers, device, cfg.resources.precision, cfg.source.eval_batch_size)
    rows.frozen = cached_states(model, rows, storage.here(folder), run, langs, log)


def row_positions(ids: pa.ChunkedArray, of: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each id in ``ids``, its row in ``of`` (-1 where absent)."""
    pos = pc.index_in(ids, value_set=of.combine_chunks() if isinstance(of, pa.ChunkedArray) else of)
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def read_q(path: str, ids: pa.ChunkedArray) -> np.ndarray:
    """The pseudo-label distribution q of each target row, in row order."""
    from conlst_ray.ray_jobs.sharded import read_outputs

    table = read_outputs(path)
    pos = row_positions(ids, table.column("id"))
    if (pos < 0).any():
        first = ids.take(pa.array(np.flatnonzero(pos < 0)[:1]))[0].as_py()
        raise ValueError(f"{path}: no pseudo-label for {int((pos < 0).sum())} target rows (e.g. {first})")
    q = table.column("q").combine_chunks()
    return q.flatten().to_numpy().reshape(len(q), -1).astype(np.float32)[pos]


def read_backtranslations(tokens: dict, target: TokenRows, stamp: str) -> Optional[AlignedRows]:
    """Back-translated token ids aligned with ``target`` rows; rows without a
    translation (an uncovered language) keep their own."""
    entry = tokens.get("translations")
    if entry is None:
        return None
    translated = open_token_rows(*entry, expect_stamp=stamp)
    return AlignedRows(translated, target, row_positions(target.ids, translated.ids))
