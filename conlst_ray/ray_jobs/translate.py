"""Translation on Ray Data: an actor pool holding a seq2seq model.

* back-translation: every target row, target -> pivot -> target, its text
  and (pair tasks) its second text (the strong view of the self-training stage);
* translate-train: every labelled source row into each target language
  (the paper's CoNLST-MT setting), labels kept.

Input is the cached corpus shards; output is Parquet keyed by id, resumable
per shard like pseudo-labelling (see sharded.py), so reruns reuse it.
Columns: id, lang, pos, source_id, text, text_pair (null for single texts), label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from conlst_ray.config.provenance import fingerprint, weights_stamp
from conlst_ray.models.translation import (
    SYNTHETIC_MODEL,
    TranslationConfigError,
    TranslatorSpec,
    check_coverage,
    detect_family,
    make_translator,
)
from conlst_ray.ray_jobs.corpus_cache import CachedCorpus
from conlst_ray.ray_jobs.sharded import JobReport, ShardedJob, run_sharded_job
from conlst_ray.storage import mirror as storage

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import TranslationConfig

TEXT_COLUMNS = ["id", "lang", "pos", "text", "text_pair", "label"]


def read_shards(paths: pa.Table) -> pa.Table:
    """One cached shard per input row -> its text rows plus their path."""
    tables = []
    for path in paths.column("path").to_pylist():
        table = pq.read_table(storage.fetch(path), columns=TEXT_COLUMNS)
        tables.append(table.append_column("path", pa.array([path] * table.num_rows)))
    return pa.concat_tables(tables)


class TranslateActor:
    """Holds one translation model; translates the rows of a batch, grouped by language."""

    def __init__(self, spec: TranslatorSpec, mode: str, pivot: str, targets: Sequence[str]):
        self.translator = make_translator(spec)
        self.mode, self.pivot, self.targets = mode, pivot, list(targets)

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        out = {k: [] for k in ("id", "lang", "pos", "path", "source_id", "text", "text_pair", "label")}
        for lang in dict.fromkeys(r["lang"] for r in rows):
            group = [r for r in rows if r["lang"] == lang]
            for tgt, texts, pairs in self._translate(lang, group):
                for r, text, pair in zip(group, texts, pairs):
                    out["id"].append(r["id"] if self.mode == "back" else f"{tgt}-mt-{r['id']}")
                    out["lang"].append(tgt)
                    for key in ("pos", "path", "label"):
                        out[key].append(r[key])
                    out["source_id"].append(r["id"])
                    out["text"].append(text)
                    out["text_pair"].append(pair)
        return _table(out)

    def _translate(self, lang: str, group: list):
        """(target language, texts, second texts) per direction; a single-text
        row has no second text to translate (None)."""
        texts = [r["text"] for r in group]
        pairs = [r["text_pair"] for r in group] if group and group[0]["text_pair"] is not None else None
        t = self.translator

        def run(fn, *args):
            return fn(texts, *args), (fn(pairs, *args) if pairs is not None else [None] * len(texts))

        if self.mode == "back":
            yield (lang, *run(t.back_translate, lang, self.pivot))
            return
        for tgt in self.targets:
            yield (tgt, *run(t.translate, lang, tgt))


def _table(out: dict) -> pa.Table:
    """The translated rows; text_pair stays a string column when every row is a single text (all null)."""
    return pa.table({k: pa.array(v, pa.string()) if k in ("text", "text_pair") else v for k, v in out.items()})


def resolve_family(tr_cfg: "TranslationConfig") -> str:
    """The code table, read from the model's config when family is 'auto'
    (cheap: no weights are loaded)."""
    if not tr_cfg.model:
        raise TranslationConfigError("translation.model is not set: name a seq2seq model (e.g. "
                                     "facebook/mbart-large-50-many-to-many-mmt or facebook/nllb-200-distilled-600M)")
    if tr_cfg.model == SYNTHETIC_MODEL:
        return "synthetic"
    if tr_cfg.family != "auto":
        return tr_cfg.family
    from transformers import AutoConfig, AutoTokenizer

    try:
        config, tokenizer = AutoConfig.from_pretrained(tr_cfg.model), AutoTokenizer.from_pretrained(tr_cfg.model)
    except OSError as exc:
        raise TranslationConfigError(f"translation.model: cannot load {tr_cfg.model!r} (no hub access? "
                                     f"give a local directory): {exc}") from None
    return detect_family(config, tokenizer)


@dataclass(frozen=True)
class TranslationJob:
    """Back-translate (mode 'back') every language of ``corpus``, or
    translate its rows (mode 'train', labelled source rows) into ``targets``,
    with the model of ``tr_cfg`` (the config's translation section)."""
    tr_cfg: "TranslationConfig"      # the config's translation section
    corpus: CachedCorpus
    out_root: Path
    mode: str = "back"
    targets: tuple = ()
    cpus_per_task: float = 0.25
    recompute: bool = False             # output made otherwise: start afresh instead of refusing
    synthetic: tuple = (13, 3)          # the embedded benchmark's seed and class count (its stand-in translator)


def translate(job: TranslationJob,
              on_progress: Optional[Callable[[JobReport], None]] = None) -> tuple[JobReport, list]:
    """Run ``job``. Languages the model does not cover are checked before any
    work starts. Returns (report, languages that fall back to masking-only
    augmentation)."""
    tr_cfg, mode = job.tr_cfg, job.mode
    if mode not in ("back", "train"):
        raise ValueError(f"mode must be 'back' or 'train', got {mode!r}")
    family = resolve_family(tr_cfg)
    manifests, targets, fallback = _covered(job, family)
    if not manifests or (mode == "train" and not targets):
        return JobReport(), fallback
    spec = TranslatorSpec(tr_cfg.model, family, tr_cfg.max_new_tokens, tr_cfg.num_beams, tr_cfg.batch_size,
                          tr_cfg.gpus_per_actor > 0, tuple(job.synthetic))

    def stages(ds):
        ds = ds.map_batches(read_shards, batch_format="pyarrow", batch_size=None, num_cpus=job.cpus_per_task)
        return ds.map_batches(TranslateActor, batch_format="pyarrow", batch_size=tr_cfg.batch_size * 4,
                              compute=ray.data.ActorPoolStrategy(size=tr_cfg.actors),
                              num_cpus=tr_cfg.cpus_per_actor, num_gpus=tr_cfg.gpus_per_actor,
                              fn_constructor_args=(spec, mode, tr_cfg.pivot_lang, targets))

    sharded = ShardedJob("back-translate" if mode == "back" else "translate-train", manifests, Path(job.corpus.root),
                         Path(job.out_root), stages, job.cpus_per_task,
                         rows_per_input=1 if mode == "back" else len(targets),
                         provenance=_provenance(tr_cfg, manifests, mode, targets,
                                                {"benchmark_seed": job.synthetic[0],
                                                 "benchmark_classes": job.synthetic[1]}),
                         recompute=job.recompute)
    return run_sharded_job(sharded, on_progress), fallback


def _covered(job: TranslationJob, family: str) -> tuple[dict, list, list]:
    """(the manifests of the languages to translate, the target languages,
    the languages that fall back to masking-only augmentation)."""
    tr_cfg, manifests = job.tr_cfg, job.corpus.manifests
    if job.mode == "back":
        covered, fallback = check_coverage(family, list(manifests), tr_cfg.on_uncovered)
        check_coverage(family, [tr_cfg.pivot_lang], "error")
        return {lang: m for lang, m in manifests.items() if lang in covered}, [], fallback
    check_coverage(family, list(manifests), "error")
    targets, fallback = check_coverage(family, list(job.targets), tr_cfg.on_uncovered)
    return manifests, targets, fallback


def _provenance(tr_cfg, manifests: dict, mode: str, targets, benchmark: dict) -> dict:
    """Translations are tied to the MT settings and the corpus they translate (per language)."""

    from conlst_ray.ray_jobs.corpus_cache import corpus_digest

    mt = {"MT model weights": weights_stamp(tr_cfg.model)} if tr_cfg.model and Path(tr_cfg.model).is_dir() else {}
    settings = {**{f"translation.{k}": v for k, v in tr_cfg.model_dump().items()},
                "mode": mode, "targets": list(targets), **benchmark}
    return {lang: fingerprint(settings, {"corpus": corpus_digest({lang: m}), **mt}) for lang, m in manifests.items()}
