"""Pseudo-labelling of target corpora on Ray Data.

    cached shards (all languages, one dataset)
      -> tokenize                 CPU tasks
      -> predict q                actor pool (GPUs per actor from the config)
      -> write part files         CPU tasks
    driver: counts rows per shard; a complete shard is merged, sorted and
    renamed into place -> output/lang=xx/shard-NNNNN.parquet

Output columns: id, lang, pos, pseudo_label, confidence, q (the full class
distribution). The driver holds per-shard row counters, never the corpus.
A rerun skips shards whose output exists: they were renamed into place only
once complete.
"""

from __future__ import annotations

import functools
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from conlst_ray.ray_jobs.corpus_cache import lang_dir, write_parquet_atomic

TMP = "_parts"


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """One tokenizer per worker process (Ray reuses task workers)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def read_and_tokenize(paths: pa.Table, tokenizer_dir: str, max_length: int) -> pa.Table:
    """Read cached shards (one per input row) and tokenise them: one CPU task
    per shard, so blocks stay shard-sized and stream through the actor pool."""
    tables = []
    for path in paths.column("path").to_pylist():
        table = pq.read_table(path, columns=["id", "lang", "pos", "premise", "hypothesis"])
        tables.append(tokenize_batch(table.append_column("path", pa.array([path] * table.num_rows)),
                                     tokenizer_dir, max_length))
    return pa.concat_tables(tables)


def tokenize_batch(table: pa.Table, tokenizer_dir: str, max_length: int) -> pa.Table:
    """premise/hypothesis -> unpadded token ids (list<int32>)."""
    tok = load_tokenizer(tokenizer_dir)
    enc = tok(table.column("premise").to_pylist(), table.column("hypothesis").to_pylist(),
              truncation=True, max_length=max_length, padding=False)
    out = table.select(["id", "lang", "pos", "path"])
    out = out.append_column("input_ids", pa.array(enc["input_ids"], pa.list_(pa.int32())))
    if "token_type_ids" in enc:
        out = out.append_column("token_type_ids", pa.array(enc["token_type_ids"], pa.list_(pa.int8())))
    return out


def pad_list_column(column, order: np.ndarray, pad: int) -> np.ndarray:
    """Rows ``order`` of a list<int> column, right-padded to their longest."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    lengths = offsets[order + 1] - offsets[order]
    out = np.full((len(order), int(lengths.max())), pad, dtype=np.int64)
    for r, (i, n) in enumerate(zip(order, lengths)):
        out[r, :n] = values[offsets[i]:offsets[i] + n]
    return out


class Predictor:
    """Inference actor: holds the model on its device and returns q for a
    batch. Rows are sorted by length and cut into micro-batches, each padded
    to its own longest pair (length bucketing)."""

    def __init__(self, model_dir: str, micro_batch: int, use_gpu: bool = False,
                 torch_threads: Optional[int] = None):
        import torch

        from conlst_ray.model import ConlstEncoder

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.torch = torch
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = ConlstEncoder.load(model_dir).eval().to(self.device)
        self.pad_id = load_tokenizer(model_dir).pad_token_id or 0
        self.micro_batch = micro_batch

    def __call__(self, table: pa.Table) -> pa.Table:
        torch = self.torch
        ids_col = table.column("input_ids").combine_chunks()
        lengths = np.diff(ids_col.offsets.to_numpy())
        order = np.argsort(lengths, kind="stable")
        has_types = "token_type_ids" in table.column_names
        q = np.zeros((table.num_rows, self.model.num_labels), dtype=np.float32)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                     enabled=self.device.type == "cuda"):
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


def shard_key(path: str) -> str:
    """.../lang=fr/shard-00003.parquet -> 'lang=fr/shard-00003'."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}"


def write_parts(table: pa.Table, tmp_root: str) -> pa.Table:
    """Write each shard's rows of this batch as a part file; return (shard, rows)."""
    keys, counts = [], []
    paths = table.column("path")
    for path in pc.unique(paths).to_pylist():
        part = table.filter(pc.equal(paths, path)).drop_columns(["path"])
        key = shard_key(path)
        write_parquet_atomic(part, Path(tmp_root) / key / f"part-{uuid.uuid4().hex}.parquet")
        keys.append(key)
        counts.append(part.num_rows)
    return pa.table({"shard": keys, "rows": pa.array(counts, pa.int64())})


@dataclass
class LabelReport:
    computed: list = field(default_factory=list)   # shards computed by this call
    skipped: list = field(default_factory=list)    # shards already complete
    rows: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def finalize_shard(tmp_root: Path, out_root: Path, key: str, expected: int) -> None:
    """Merge a complete shard's parts (a retried task may have written a batch
    twice: keep each id once), check the count, sort by position, rename into place."""
    parts = sorted((tmp_root / key).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    table = table.sort_by("pos")
    ids = table.column("id").to_numpy(zero_copy_only=False)
    keep = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, bool)
    table = table.filter(pa.array(keep))
    if table.num_rows != expected:
        raise RuntimeError(f"shard {key}: {table.num_rows} distinct rows written, expected {expected}")
    write_parquet_atomic(table, out_root / f"{key}.parquet")
    shutil.rmtree(tmp_root / key, ignore_errors=True)


def pseudo_label(model_dir: str, corpus_root: str | Path, manifests: dict[str, dict], out_root: str | Path,
                 res_cfg, max_length: int, log=print,
                 on_progress: Optional[Callable[[LabelReport], None]] = None) -> LabelReport:
    """Pseudo-label every cached shard of ``manifests`` whose output is missing."""
    corpus_root, out_root = Path(corpus_root), Path(out_root)
    tmp_root = out_root / TMP
    expected, files = {}, {}
    report = LabelReport()
    for lang, manifest in manifests.items():
        for shard in manifest["shards"]:
            key = f"lang={lang}/{Path(shard['file']).stem}"
            if (out_root / f"{key}.parquet").is_file():
                report.skipped.append(key)
            else:
                expected[key] = shard["rows"]
                files[key] = str(lang_dir(corpus_root, lang) / shard["file"])
    if not expected:
        log(f"[pseudo-label] all {len(report.skipped)} shard(s) complete: nothing to do")
        return report
    shutil.rmtree(tmp_root, ignore_errors=True)  # parts of an interrupted attempt are not trusted
    log(f"[pseudo-label] {len(expected)} shard(s) to label, {len(report.skipped)} already complete")

    t0, last = time.time(), 0.0
    # One block per shard (read_parquet would fold small files into one block).
    ds = ray.data.from_items([{"path": f} for f in files.values()], override_num_blocks=len(files))
    ds = ds.map_batches(read_and_tokenize, batch_format="pyarrow", batch_size=None, num_cpus=res_cfg.cpus_per_task,
                        fn_kwargs={"tokenizer_dir": model_dir, "max_length": max_length})
    ds = ds.map_batches(Predictor, batch_format="pyarrow", batch_size=res_cfg.actor_batch_rows,
                        compute=ray.data.ActorPoolStrategy(size=res_cfg.inference_actors),
                        num_cpus=res_cfg.cpus_per_actor, num_gpus=res_cfg.gpus_per_actor,
                        fn_constructor_kwargs={"model_dir": model_dir,
                                               "micro_batch": res_cfg.inference_batch_size,
                                               "use_gpu": res_cfg.gpus_per_actor > 0,
                                               "torch_threads": res_cfg.torch_threads})
    ds = ds.map_batches(write_parts, batch_format="pyarrow", batch_size=None, num_cpus=res_cfg.cpus_per_task,
                        fn_kwargs={"tmp_root": str(tmp_root)})
    counts = dict.fromkeys(expected, 0)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for key, rows in zip(batch.column("shard").to_pylist(), batch.column("rows").to_pylist()):
            counts[key] += rows
            report.rows += rows
            if counts[key] >= expected[key] and key not in report.computed:
                finalize_shard(tmp_root, out_root, key, expected[key])
                report.computed.append(key)
        report.seconds = time.time() - t0
        if report.seconds - last > 10:
            last = report.seconds
            log(f"[pseudo-label] {len(report.computed)}/{len(expected)} shards, {report.rows} rows, "
                f"{report.rows_per_second:.0f} rows/s")
        if on_progress is not None:
            on_progress(report)
    missing = [k for k in expected if k not in report.computed]
    if missing:
        raise RuntimeError(f"pseudo-labelling ended with incomplete shards: {missing[:5]}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    report.seconds = time.time() - t0
    log(f"[pseudo-label] {report.rows} rows in {report.seconds:.1f}s ({report.rows_per_second:.0f} rows/s)")
    return report


def read_pseudo_labels(out_root: str | Path, langs: Optional[list] = None) -> pa.Table:
    """All finished output (optionally some languages), in language then corpus order."""
    out_root = Path(out_root)
    dirs = sorted(d for d in out_root.glob("lang=*") if langs is None or d.name[5:] in langs)
    tables = [pq.read_table(f) for d in dirs for f in sorted(d.glob("shard-*.parquet"))]
    if not tables:
        raise FileNotFoundError(f"no pseudo-labels under {out_root}")
    return pa.concat_tables(tables)
