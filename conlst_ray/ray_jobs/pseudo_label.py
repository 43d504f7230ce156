"""Pseudo-labelling of target corpora on Ray Data.

    cached shards (all languages, one dataset)
      -> read token ids           CPU tasks, one per shard (tokenised once: ray_jobs/tokens.py)
      -> predict q                actor pool (GPUs per actor from the config)
      -> write, finalize          see ray_jobs/sharded.py (resumable per shard)

A small corpus with one CPU actor (``resources.driver_inference_rows``) runs
the same two steps in the driver, shard by shard, with the same outputs.

Output columns: id, lang, pos, pseudo_label, confidence, q (the full class
distribution), under out_root/lang=xx/shard-NNNNN.parquet.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pyarrow as pa
import ray

from conlst_ray.config.provenance import fingerprint, weights_stamp
from conlst_ray.models.tokenizers import load_tokenizer
from conlst_ray.ray_jobs.corpus_cache import CachedCorpus
from conlst_ray.ray_jobs.sharded import JobReport, ShardedJob, read_outputs, run_sharded_job
from conlst_ray.storage import mirror as storage

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


def read_tokens(paths: pa.Table, tokens: str) -> pa.Table:
    """The token ids of cached shards (one per input row), tokenised once by
    ``ray_jobs/tokens.py``: one CPU task per shard, so blocks stay
    shard-sized and stream through the actor pool."""
    from conlst_ray.ray_jobs.tokens import token_file

    tables = []
    for path in paths.column("path").to_pylist():
        table = pa.ipc.open_file(pa.memory_map(str(storage.fetch(token_file(tokens, path))))).read_all()
        table = table.select([c for c in ("id", "lang", "pos", "input_ids", "token_type_ids")
                              if c in table.column_names])
        tables.append(table.append_column("path", pa.array([path] * table.num_rows)))
    return pa.concat_tables(tables)


def pad_list_column(column, order: np.ndarray, pad: int) -> np.ndarray:
    """Rows ``order`` of a list<int> column, right-padded to their longest
    (one vectorised gather of their values, then ``batches.padded``)."""
    from conlst_ray.training.batches import padded

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    starts, lengths = offsets[order], offsets[order + 1] - offsets[order]
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return padded(values[np.repeat(starts, lengths) + within], lengths, pad)[0]


class Predictor:
    """Inference actor: holds the model on its device and returns q for a
    batch. Rows are sorted by length and cut into micro-batches, each padded
    to its own longest pair (length bucketing)."""

    def __init__(self, model_dir: str, micro_batch: int, use_gpu: bool = False,
                 torch_threads: Optional[int] = None, precision: str = "auto"):
        import torch

        from conlst_ray.models.encoder import ConlstEncoder

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.torch = torch
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = ConlstEncoder.load(model_dir).eval().to(self.device)
        self.pad_id = load_tokenizer(model_dir).pad_token_id or 0
        self.micro_batch, self.precision = micro_batch, precision

    def __call__(self, table: pa.Table) -> pa.Table:
        torch = self.torch
        ids_col = table.column("input_ids").combine_chunks()
        lengths = np.diff(ids_col.offsets.to_numpy())
        order = np.argsort(lengths, kind="stable")
        has_types = "token_type_ids" in table.column_names
        q = np.zeros((table.num_rows, self.model.num_labels), dtype=np.float32)
        from conlst_ray.training.inference import autocast

        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(order), self.micro_batch):
                rows = order[start:start + self.micro_batch]
                ids = torch.from_numpy(pad_list_column(ids_col, rows, self.pad_id)).to(self.device)
                # mask from true lengths: a pad id may also occur inside real text
                mask = (torch.arange(ids.shape[1], device=ids.device)[None, :]
                        < torch.as_tensor(lengths[rows], device=ids.device)[:, None]).long()
                batch = {"input_ids": ids, "attention_mask": mask}
                if has_types:
                    batch["token_type_ids"] = torch.from_numpy(
                        pad_list_column(table.column("token_type_ids"), rows, 0)).to(self.device)
                q[rows] = self.model(**batch).float().softmax(-1).cpu().numpy()
        out = table.select(["id", "lang", "pos", "path"])
        out = out.append_column("pseudo_label", pa.array(q.argmax(-1).astype(np.int64)))
        out = out.append_column("confidence", pa.array(q.max(-1)))
        n = q.shape[1]
        return out.append_column("q", pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), n))


def pseudo_label(model_dir: str, corpus: CachedCorpus, out_root: str | Path, cfg: "Config",
                 on_progress: Optional[Callable[[JobReport], None]] = None, recompute: bool = False) -> JobReport:
    """Pseudo-label every shard of ``corpus`` whose output is missing, from
    the corpus tokenised once (by the model's tokenizer), with
    ``cfg.resources``' inference actors. The output folder is tied to the
    model's weights and tokenizer, the corpus and the settings: labels of
    another model are never reused."""
    from conlst_ray.ray_jobs.corpus_cache import corpus_digest
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus

    corpus_root, manifests = corpus.root, corpus.manifests
    res_cfg, max_length = cfg.resources, cfg.data.max_length

    weights = weights_stamp(model_dir)
    tokens = tokenize_cached_corpus(corpus_root, manifests, model_dir, max_length, res_cfg.cpus_per_task)
    provenance = {lang: fingerprint({"max_length": max_length, "precision": res_cfg.precision},
                                    {"model weights": weights, "corpus": corpus_digest({lang: m}),
                                     "tokenizer": tokens.name})
                  for lang, m in manifests.items()}

    def stages(ds):
        ds = ds.map_batches(read_tokens, batch_format="pyarrow", batch_size=None,
                            num_cpus=res_cfg.cpus_per_task,
                            compute=ray.data.TaskPoolStrategy(size=res_cfg.tokenize_tasks),
                            fn_kwargs={"tokens": str(tokens)})
        return ds.map_batches(Predictor, batch_format="pyarrow", batch_size=res_cfg.actor_batch_rows,
                              compute=ray.data.ActorPoolStrategy(size=res_cfg.inference_actors),
                              num_cpus=res_cfg.cpus_per_actor, num_gpus=res_cfg.gpus_per_actor,
                              fn_constructor_kwargs={"model_dir": model_dir,
                                                     "micro_batch": res_cfg.inference_batch_size,
                                                     "use_gpu": res_cfg.gpus_per_actor > 0,
                                                     "torch_threads": res_cfg.torch_threads,
                                                     "precision": res_cfg.precision})

    rows = sum(m["rows"] for m in manifests.values())
    in_driver = None
    if res_cfg.inference_actors == 1 and res_cfg.gpus_per_actor == 0 and rows <= res_cfg.driver_inference_rows:
        in_driver = InDriver(str(tokens), {"model_dir": model_dir, "micro_batch": res_cfg.inference_batch_size,
                                           "precision": res_cfg.precision}, res_cfg.actor_batch_rows)
        log.info(f"[pseudo-label] {rows} rows, labelled in the driver (at most resources.driver_inference_rows)")
    job = ShardedJob("pseudo-label", manifests, Path(corpus_root), Path(out_root), stages, res_cfg.cpus_per_task,
                     provenance=provenance, recompute=recompute, in_driver=in_driver)
    return run_sharded_job(job, on_progress)


class InDriver:
    """The job's two steps (read token ids, predict) for one shard, in the
    driver: a small corpus is labelled in less time than a Ray Data job takes
    to start its actor (measured on 8,000 rows: under 1 s against about 10 s).
    The rows reach the model in the actor's batches of ``actor_batch_rows``,
    and the model is loaded on the first shard only (a finished job loads none)."""

    def __init__(self, tokens: str, predictor_kwargs: dict, actor_batch_rows: int):
        self.tokens, self.kwargs, self.batch_rows = tokens, predictor_kwargs, actor_batch_rows
        self.predictor: Optional[Predictor] = None

    def __call__(self, paths: pa.Table) -> pa.Table:
        if self.predictor is None:  # torch_threads is the actors' setting, never the driver's
            self.predictor = Predictor(**self.kwargs)
        table = read_tokens(paths, self.tokens)
        return pa.concat_tables([self.predictor(table.slice(start, self.batch_rows))
                                 for start in range(0, table.num_rows, self.batch_rows)])


def read_pseudo_labels(out_root: str | Path, langs: Optional[list] = None) -> pa.Table:
    """All pseudo-labels (optionally of some languages), in language then corpus order."""
    return read_outputs(out_root, langs)
