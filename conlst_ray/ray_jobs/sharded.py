"""The driver shared by every Ray Data job over cached corpus shards.

    one input row per pending shard (from_items: one block per shard)
      -> the job's stages            (tasks / actor pools, given by the caller)
      -> write part files            CPU tasks
    driver: counts rows per shard; a complete shard is merged, sorted by
    position and renamed into place: out_root/lang=xx/shard-NNNNN.parquet

The driver holds one row counter per shard, never the corpus. A rerun skips
shards whose output exists: they were renamed into place only when complete,
so an interrupted run resumes where it stopped and does no work twice.
"""

from __future__ import annotations

import json
import logging
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

from conlst_ray.config.provenance import StaleError, differences, digest, read_json
from conlst_ray.ray_jobs.corpus_cache import lang_dir, write_parquet_atomic
from conlst_ray.storage import integrity
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

log = logging.getLogger(__name__)

TMP = "_parts"


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
        part_file = storage.here(tmp_root) / key / f"part-{uuid.uuid4().hex}.parquet"
        write_parquet_atomic(part, part_file)
        storage.publish(part_file)
        keys.append(key)
        counts.append(part.num_rows)
    return pa.table({"shard": keys, "rows": pa.array(counts, pa.int64())})


@dataclass
class JobReport:
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
    parts = storage.files(tmp_root / key, "part-*.parquet")
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    table = table.sort_by([("pos", "ascending"), ("id", "ascending")])  # a duplicate sits next to its twin
    ids = table.column("id").to_numpy(zero_copy_only=False)
    keep = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, bool)
    table = table.filter(pa.array(keep))
    if table.num_rows != expected:
        raise RuntimeError(f"shard {key}: {table.num_rows} distinct rows written, expected {expected}")
    write_parquet_atomic(table, out_root / f"{key}.parquet")
    integrity.seal(out_root / f"{key}.parquet")
    storage.publish(out_root / f"{key}.parquet")
    storage.remove(tmp_root / key)


@dataclass
class ShardedJob:
    """A Ray Data job over cached corpus shards: ``stages`` (Dataset of
    {"path"} -> Dataset with id, pos, path columns) runs over every shard of
    ``manifests`` (language -> manifest) under ``corpus_root`` whose output
    under ``out_root`` is missing. With ``in_driver`` (a table of {"path"} ->
    the same columns) a small job runs in this process instead, shard by
    shard, written and finalized by the same code."""
    name: str
    manifests: dict
    corpus_root: Path
    out_root: Path
    stages: Callable
    cpus_per_task: float = 0.25
    rows_per_input: int = 1                 # output rows per input row (one per target language of translate-train)
    provenance: Optional[dict] = None       # language -> what makes its output (see check_provenance)
    recompute: bool = False                 # output made otherwise: start afresh instead of refusing
    in_driver: Optional[Callable] = None    # a small job: ``stages`` as a function of one batch, run here


def run_sharded_job(job: ShardedJob, on_progress: Optional[Callable[[JobReport], None]] = None) -> JobReport:
    """Run ``job`` over its pending shards and finalize each as it completes."""
    out_root = Path(job.out_root)
    if job.provenance is not None:
        check_provenance(job.name, out_root, job.provenance, job.recompute)
    report = JobReport()
    expected, files = _pending_shards(job, report)
    if not expected:
        log.info(f"[{job.name}] all {len(report.skipped)} shard(s) complete: nothing to do")
        return report
    tmp_root = out_root / TMP
    storage.remove(tmp_root)  # parts of an interrupted attempt are not trusted
    log.info(f"[{job.name}] {len(expected)} shard(s) to do, {len(report.skipped)} already complete")
    if job.in_driver is not None:  # the same functions, shard by shard, in this process
        batches = (write_parts(job.in_driver(pa.table({"path": [f]})), str(tmp_root)) for f in files.values())
    else:
        # One block per shard (read_parquet would fold small files into one block).
        ds = ray.data.from_items([{"path": f} for f in files.values()], override_num_blocks=len(files))
        ds = job.stages(ds).map_batches(write_parts, batch_format="pyarrow", batch_size=None,
                                        num_cpus=job.cpus_per_task, fn_kwargs={"tmp_root": str(tmp_root)})
        batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
    _collect(batches, expected, tmp_root, out_root, report, JobProgress(job.name, on_progress))
    missing = [k for k in expected if k not in report.computed]
    if missing:
        raise RuntimeError(f"{job.name} ended with incomplete shards: {missing[:5]}")
    storage.remove(tmp_root)
    log.info(f"[{job.name}] {report.rows} rows in {report.seconds:.1f}s ({report.rows_per_second:.0f} rows/s)")
    return report


def _pending_shards(job: ShardedJob, report: JobReport) -> tuple[dict, dict]:
    """Shard key -> expected output rows and -> input file, of every shard
    without output; the finished ones go to ``report.skipped``."""
    expected, files = {}, {}
    for lang, manifest in job.manifests.items():
        finished = set(storage.listdir(lang_dir(Path(job.out_root), lang)))
        for shard in manifest["shards"]:
            name = f"{Path(shard['file']).stem}.parquet"
            key, output = f"lang={lang}/{Path(shard['file']).stem}", lang_dir(Path(job.out_root), lang) / name
            if name in finished and (problem := integrity.discard_if_damaged(output)):
                log.info(f"[{job.name}] {lang}: {problem}: computing that shard again")
                finished.discard(name)
            if name in finished:
                report.skipped.append(key)
            else:
                expected[key] = shard["rows"] * job.rows_per_input
                files[key] = str(lang_dir(Path(job.corpus_root), lang) / shard["file"])
    return expected, files


def _collect(batches, expected: dict, tmp_root: Path, out_root: Path, report: JobReport, progress: Callable) -> None:
    """Count the rows written per shard (``batches``: tables of shard, rows);
    a shard is finalized (merged, renamed into place) once all its rows are written."""
    t0 = time.time()
    counts = dict.fromkeys(expected, 0)
    for batch in batches:
        for key, rows in zip(batch.column("shard").to_pylist(), batch.column("rows").to_pylist()):
            counts[key] += rows
            report.rows += rows
            if counts[key] >= expected[key] and key not in report.computed:
                finalize_shard(tmp_root, out_root, key, expected[key])
                report.computed.append(key)
        report.seconds = time.time() - t0
        progress(report)
    report.seconds = time.time() - t0


class JobProgress:
    """A progress line at most every 10 s, and the caller's callback."""

    def __init__(self, name: str, on_progress):
        self.name, self.on_progress, self.logged = name, on_progress, 0.0

    def __call__(self, report: JobReport) -> None:
        if report.seconds - self.logged > 10:
            self.logged = report.seconds
            log.info(f"[{self.name}] {len(report.computed)} shards done, {report.rows} rows, "
                     f"{report.rows_per_second:.0f} rows/s")
        if self.on_progress is not None:
            self.on_progress(report)


PROVENANCE = "_provenance.json"


def check_provenance(name: str, out_root: Path, provenance: dict[str, dict], recompute: bool) -> None:
    """A language's finished shards are reused only when its output folder
    was made by the same model, corpus and settings; otherwise refuse naming
    what differs, or (``recompute``) start that folder afresh. Recorded per
    language (one folder may hold languages labelled by different models, as
    in per-language mode) and before any shard is written, so half-done
    shards are tied to it too."""

    for lang, wanted in provenance.items():
        folder = lang_dir(out_root, lang)
        old = read_json(storage.fetch(folder / PROVENANCE))
        if old is not None or any(n.startswith("shard-") for n in storage.listdir(folder)):
            changed = differences(old, wanted)
            if changed and not recompute:
                raise StaleError(f"{folder} holds {name} output made otherwise: {'; '.join(changed)}. "
                                 f"Write elsewhere (--out) or add --recompute")
            if changed:
                log.info(f"[{name}] recomputing {folder}: {'; '.join(changed)}")
                storage.remove(folder)
        atomic_write_text(folder / PROVENANCE, json.dumps(wanted, indent=2, sort_keys=True, default=str))
        storage.publish(folder / PROVENANCE)


def output_stamp(out_root: str | Path | None) -> Optional[str]:
    """One digest of what made every language of a job's output folder."""

    if not out_root:
        return None
    dirs = [Path(out_root) / n for n in storage.listdir(out_root) if n.startswith("lang=")]
    return digest({d.name: read_json(storage.fetch(d / PROVENANCE)) for d in dirs})


def read_outputs(out_root: str | Path, langs: Optional[list] = None) -> pa.Table:
    """All finished output of a sharded job (optionally some languages), in
    language then corpus order; fetched to this node first with object storage)."""
    shards = storage.files(out_root, "lang=*/shard-*.parquet")  # sorted: language, then corpus order
    tables = [pq.read_table(f) for f in shards if langs is None or f.parent.name[5:] in langs]
    if not tables:
        raise FileNotFoundError(f"no finished output under {out_root}")
    return pa.concat_tables(tables)
