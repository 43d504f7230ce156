"""Target corpora as Parquet shards with known row counts, one folder per
language, each complete folder marked by a manifest.

Every later Ray Data job reads these shards, so (a) a job knows how many
rows each shard holds and can tell a finished shard from a half-done one,
and (b) any input format (TSV, JSONL, hub data sets) is read once, in a Ray
task per language, never on the driver.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from conlst_ray.config.provenance import differences, digest, fingerprint, spec_files
from conlst_ray.data.corpora import read_options
from conlst_ray.data.readers import no_rows, read_rows
from conlst_ray.data.schema import CorpusError
from conlst_ray.storage import integrity
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text, write_via_temporary

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class CachedCorpus:
    """A corpus sharded into the cache: its folder and, per language, the
    manifest ``ingest_corpora`` returned."""
    root: Path
    manifests: dict


def lang_dir(root: Path, lang: str) -> Path:
    return Path(root) / f"lang={lang}"


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write next to ``path`` and rename: a reader never sees half a file."""
    write_via_temporary(path, lambda tmp: pq.write_table(table, tmp))


def corpus_task(fn, cpus: float, on_this_node: bool = False, **options):
    """``fn`` as a Ray task for the corpus cache. Scheduled outside any
    placement group: called from a Tune trial (whose driver holds a 0.01-CPU
    bundle), a child task would otherwise be captured by the trial's group
    and fail for want of CPUs. ``on_this_node``: on the caller's node (the
    one that can read the files a corpus spec names)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

    strategy = (NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
                if on_this_node else PlacementGroupSchedulingStrategy(None))
    return ray.remote(fn).options(num_cpus=cpus, scheduling_strategy=strategy, **options)


def ingest_language(spec: str, lang: str, root: str, shard_rows: int, read_kwargs: dict,
                    fingerprint: dict | None = None) -> dict:
    """Read one language's corpus and write it as shards + manifest (runs as a Ray task)."""
    table, report = read_rows(spec, lang, **read_kwargs)
    if table.num_rows == 0:
        raise no_rows(spec, lang, report)
    out = lang_dir(storage.here(root), lang)
    storage.remove(out)  # leftovers of an interrupted ingest: no manifest, so not trusted
    # pos = row position within the language: restores corpus order after parallel work
    table = table.append_column("pos", pa.array(range(table.num_rows), pa.int64()))
    shards = []
    for i, start in enumerate(range(0, table.num_rows, shard_rows)):
        name = f"shard-{i:05d}.parquet"
        part = table.slice(start, shard_rows)
        write_parquet_atomic(part, out / name)
        integrity.seal(out / name)
        shards.append({"file": name, "rows": part.num_rows})
    manifest = {"spec": spec, "lang": lang, "rows": table.num_rows, "shards": shards,
                "skipped_malformed": report.skipped, "skip_reasons": dict(report.reasons),
                "skip_summary": report.summary() if report.skipped else None, "fingerprint": fingerprint}
    storage.publish(out)  # the shards first: a readable manifest means they are all there
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    storage.publish(out / MANIFEST)
    return manifest


def read_manifest(root: Path, lang: str) -> dict | None:
    path = storage.fetch(lang_dir(root, lang) / MANIFEST)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def shard_damage(root: Path, lang: str, manifest: dict) -> str | None:
    """The first shard of a cached language that is missing or not what was
    written (``storage/integrity.py``); None when all are whole."""
    folder = lang_dir(root, lang)
    return next(filter(None, (integrity.damage(folder / s["file"]) for s in manifest.get("shards", []))), None)


def corpus_fingerprint(spec: str, lang: str, read_kwargs: dict) -> dict:
    """What a language's cached shards are made of: the spec, the reading
    options and the input files' sizes and mtimes."""

    return fingerprint({"spec": spec, "lang": lang, **read_kwargs}, spec_files(spec, [lang]))


def corpus_digest(manifests: dict[str, dict]) -> str:
    """One stamp for the cached corpora a job reads."""

    return digest({lang: m.get("fingerprint") for lang, m in sorted(manifests.items())})


def ingest_corpora(spec: str, langs: Iterable[str], root: str | Path, data_cfg, cpus_per_task: float = 0.25,
                   max_rows: Optional[int] = None) -> dict[str, dict]:
    """Shard every language's corpus under ``root``. Cached: a language whose
    manifest records the same spec, reading options and input files is not
    read again; one made otherwise (another ``data.max_rows``, an edited
    file) is rebuilt, and the jobs that read it see a new corpus stamp.
    ``max_rows`` overrides ``data.max_rows`` (the source corpus has its own
    cap). Returns lang -> manifest."""

    root = Path(root)
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise CorpusError(f"{spec}: no languages given")
    # the source dev set may start past the originals of the unlabelled rows (data.source_dev_skip_rows)
    dev = spec == data_cfg.source_dev and langs == [data_cfg.source_lang]
    read_kwargs = read_options(data_cfg, max_rows, data_cfg.source_dev_skip_rows if dev else 0)
    manifests, pending = {}, []
    for lang in langs:
        manifest = read_manifest(root, lang)
        expected = corpus_fingerprint(spec, lang, read_kwargs)
        if manifest is not None:
            changed = differences(manifest.get("fingerprint"), expected)
            damaged = None if changed else shard_damage(root, lang, manifest)
            if not changed and not damaged:
                manifests[lang] = manifest
                continue
            why = f"made otherwise ({'; '.join(changed)})" if changed else f"damaged ({damaged})"
            log.info(f"[ingest] {lang}: cached corpus {why}: rebuilding")
        pending.append(lang)
    if pending:
        # with object storage: read where the spec's files are (the caller's node), shards to storage
        task = corpus_task(ingest_language, cpus_per_task, on_this_node=storage.is_remote(root), max_retries=1,
                           retry_exceptions=[OSError])
        refs = {lang: task.remote(spec, lang, str(root), data_cfg.shard_rows, read_kwargs,
                                  corpus_fingerprint(spec, lang, read_kwargs)) for lang in pending}
        for lang, ref in refs.items():
            manifests[lang] = ray.get(ref)  # a CorpusError surfaces here with its message
            if manifests[lang].get("skip_summary"):  # data.on_malformed=skip: say how many and why
                log.info(f"[ingest] {manifests[lang]['skip_summary']}")
        log.info(f"[ingest] {len(pending)} language(s) sharded under {root}")
    return {lang: manifests[lang] for lang in langs}
