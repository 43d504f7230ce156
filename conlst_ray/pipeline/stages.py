"""The CoNLST pipeline, stage by stage, resumable:

    source fine-tuning (or a given source checkpoint)
      -> target corpora sharded -> pseudo-labels (Ray Data)
      -> CoNL (Ray Train)
      -> back-translations (Ray Data, when a translation model is set)
      -> self-training, T iterations (Ray Train; pseudo-labels and FlexMatch
         thresholds recomputed inside the workers each iteration)
      -> per-language tables

Every stage writes below the run directory and marks itself done last, so a
rerun with ``--resume`` skips finished stages.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from conlst_ray import message_prefix
from conlst_ray.config import Config, with_values
from conlst_ray.config.keys import get, keys
from conlst_ray.config.provenance import spec_files, stage_fingerprint, weights_stamp
from conlst_ray.config.stages import BACKTRANSLATION, CONL, PSEUDO_LABELS, SOURCE, TARGET, Stage
from conlst_ray.data.corpora import CORPUS_FOLDERS
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.storage import mirror as storage

log = logging.getLogger(__name__)


def stage_source(cfg: "Config", run: RunDir) -> str:
    """The source model: given (CoNLST as post-training) or fine-tuned here."""
    if cfg.model.source_checkpoint:
        log.info(f"[source] using the given checkpoint {cfg.model.source_checkpoint}")
        return _shared(run, cfg.model.source_checkpoint)
    langs = cfg.data.source_train_langs or [cfg.data.source_lang]
    if run.begin(SOURCE, stage_fingerprint(SOURCE, cfg, spec_files(cfg.data.source_train, langs))):
        log.info(f"[source] done already: {run.model(SOURCE)}")
        return str(run.model(SOURCE))
    from conlst_ray.models.encoder import build_model, build_tokenizer
    from conlst_ray.ray_jobs.train import fit_stage
    from conlst_ray.training.optim import seed_everything

    seed_everything(cfg.seed)
    tokenizer = build_tokenizer(cfg.model, cfg.data)
    init = build_model(cfg.model, tokenizer, cfg.data.task.labels, cfg.data.task.kind).save(run.model("init"),
                                                                                              tokenizer)
    storage.publish(init)
    t0 = time.time()
    metrics = fit_stage(SOURCE, cfg, run.stage_files(SOURCE), str(init))
    run.mark_done(SOURCE, {"seconds": time.time() - t0, **metrics})
    kept = (f" (the best epoch is kept: {100 * metrics['best_source_dev_acc']:.1f} %)"
            if "best_source_dev_acc" in metrics else "")
    log.info(f"[source] {time.time() - t0:.1f}s, source dev accuracy "
        f"{100 * metrics.get('source_dev_acc', float('nan')):.1f} %{kept}")
    return str(run.model(SOURCE))


def _shared(run: RunDir, model: str) -> str:
    """A given model folder as every node can read it: with object storage a
    local folder is copied into the run (init/source_checkpoint) once."""
    if not storage.is_remote(run.root) or not Path(model).is_dir():
        return model
    import shutil

    copy = run.given_source_model
    if not storage.exists(copy / "config.json"):
        shutil.copytree(model, storage.here(copy), dirs_exist_ok=True)
        storage.publish(copy)
    return str(copy)


def stage_pseudo_labels(cfg: "Config", run: RunDir, model_dir: str) -> tuple[Path, Path]:
    from conlst_ray.ray_jobs.corpus_cache import corpus_digest, ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    corpus = run.target_corpus
    manifests = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, corpus, cfg.data,
                               cfg.resources.cpus_per_task)
    out = run.pseudo_labels(SOURCE)
    inputs = {"model weights": weights_stamp(model_dir), "corpus": corpus_digest(manifests)}
    if not run.begin(PSEUDO_LABELS, stage_fingerprint(PSEUDO_LABELS, cfg, inputs)):
        report = pseudo_label(model_dir, CachedCorpus(Path(corpus), manifests), out, cfg,
                              recompute=run.recompute)
        run.mark_done(PSEUDO_LABELS, {"rows": report.rows, "seconds": report.seconds}, _shards(out))
    return corpus, out


def _shards(out: Path) -> list[Path]:
    """The output shards of a sharded stage (recorded in its DONE.json);
    listed, not fetched (in object storage they stay there)."""
    return [Path(out) / d / n for d in sorted(storage.listdir(out)) if d.startswith("lang=")
            for n in sorted(storage.listdir(Path(out) / d)) if n.startswith("shard-") and n.endswith(".parquet")]


def _target_stage(stage: Stage, cfg: "Config", run: RunDir, model_dir: str, shared: "SharedWork") -> str:
    """A training stage over the target languages of ``cfg`` (a record of
    config/stages.py), skipped when done with the same settings, input model
    and upstream outputs; it reads the outputs its record names."""
    from conlst_ray.ray_jobs.sharded import output_stamp
    from conlst_ray.ray_jobs.train import fit_stage
    from conlst_ray.ray_jobs.worker import StageInputs

    name, corpus = stage.name, Path(shared.corpus)
    reads = {"pseudo_labels": shared.labels if PSEUDO_LABELS in stage.reads else None,
             "translations": shared.translations if BACKTRANSLATION in stage.reads else None}
    reads = {k: str(v) for k, v in reads.items() if v}
    inputs = {"model weights": weights_stamp(model_dir), "pseudo-labels": output_stamp(reads.get("pseudo_labels")),
              "translations": output_stamp(reads.get("translations"))}
    if stage.source_files:  # it trains on the labelled source corpus too (self-training's l_sup)
        inputs["source files"] = spec_files(cfg.data.source_train,
                                            cfg.data.source_train_langs or [cfg.data.source_lang])
    if not run.begin(name, stage_fingerprint(name, cfg, inputs)):
        t0 = time.time()
        inputs = StageInputs(target_corpus=str(corpus), corpus_dir=shared.corpus_dir,
                             langs=list(cfg.data.target_langs), **reads)
        metrics = fit_stage(name, cfg, run.stage_files(name), model_dir, inputs)
        run.mark_done(name, {"seconds": time.time() - t0, **metrics})
        log.info(f"[{name}] {time.time() - t0:.1f}s")
    return str(run.model(name))


def stage_backtranslation(cfg: "Config", run: RunDir, corpus: Path):
    if not (cfg.ssl.enabled and cfg.ssl.use_backtranslation):
        return None
    if not cfg.translation.model:
        log.info("[translate] translation.model is not set: the strong view is random masking only")
        return None
    from conlst_ray.ray_jobs.corpus_cache import corpus_digest, read_manifest
    from conlst_ray.ray_jobs.translate import CachedCorpus, TranslationJob, translate

    out = run.translations("back")
    manifests = {lang: read_manifest(corpus, lang) for lang in cfg.data.target_langs}
    if not run.begin(BACKTRANSLATION, stage_fingerprint(BACKTRANSLATION, cfg,
                                                          {"corpus": corpus_digest(manifests)})):
        t0 = time.time()
        job = TranslationJob(cfg.translation, CachedCorpus(Path(corpus), manifests), out, "back",
                             cpus_per_task=cfg.resources.cpus_per_task, recompute=run.recompute,
                             synthetic=(cfg.data.synthetic.seed, len(cfg.data.task.labels)))
        report, fallback = translate(job)
        run.mark_done(BACKTRANSLATION, {"rows": report.rows, "fallback": fallback, "seconds": time.time() - t0},
                      _shards(out))
    return out


@dataclass(frozen=True)
class SharedWork:
    """What the target stages start from: the source model, the sharded
    unlabelled target corpus, its pseudo-labels and back-translations. One
    run's target stages, every per-language sub-run and every trial of a
    search read the same object (``shared_work``)."""
    source_model: str
    corpus: str
    labels: str
    translations: Optional[str] = None

    @property
    def corpus_dir(self) -> str:
        """The run's corpus cache: the token files of every corpus a target stage reads."""
        return str(Path(self.corpus).parent)


def target_stages(cfg: "Config", run: RunDir, shared: SharedWork,
                  stop_after: str | None = None) -> dict[str, str]:
    """The training stages over the target rows (config/stages.py: CoNL then
    self-training), each that its switch leaves on starting from the model
    of the one before (the source model first); table row -> model folder."""
    models: dict[str, str] = {}
    model = shared.source_model
    for stage in TARGET:
        if enabled(cfg, stage):
            row = stage.rows[0] if models else stage.rows[-1]  # CoNLST after CoNL, self-training alone
            models[row] = model = _target_stage(stage, cfg, run, model, shared)
        if stage.name == stop_after:
            break
    return models


def enabled(cfg: "Config", stage: Stage) -> bool:
    """Whether ``cfg`` runs ``stage`` (its switch, when it has one)."""
    return stage.enabled_key is None or bool(get(cfg, stage.enabled_key))


def _one_language(cfg: "Config", root: str, lang: str, shared: SharedWork, stop_after: str | None,
                  recompute: bool = False) -> dict[str, str]:
    """One target language's independent run under RUN/targets/<lang>/."""
    sub = RunDir(storage.here(root), recompute=recompute).target_run(lang)  # this node's mirror of the run
    sub.root.mkdir(parents=True, exist_ok=True)
    cfg_l = with_values(cfg, {"data.target_langs": [lang]})
    with message_prefix(f"[{lang}] "):
        return target_stages(cfg_l, sub, shared, stop_after=stop_after)


def per_language(cfg: "Config", run: RunDir, shared: SharedWork,
                 stop_after: str | None = None) -> dict[str, dict[str, str]]:
    """The paper's setting: one independent CoNL + SSL run per target language,
    sharing the source model and the pseudo-labels. With
    resources.parallel_targets > 1 the languages run as Ray tasks, each
    driving its own training stages (they take no CPU themselves, so their
    workers get the cores), scheduled across the cluster."""
    import ray

    langs = list(cfg.data.target_langs)
    args = (str(run.root), shared, stop_after, run.recompute)
    if cfg.resources.parallel_targets > 1:
        task = ray.remote(num_cpus=0.01)(_one_language)
        pending, results = list(langs), {}
        running: dict = {}
        while pending or running:
            while pending and len(running) < cfg.resources.parallel_targets:
                lang = pending.pop(0)
                running[task.remote(cfg, args[0], lang, *args[1:])] = lang
            done, _ = ray.wait(list(running), num_returns=1)
            results[running.pop(done[0])] = ray.get(done[0])
    else:
        results = {lang: _one_language(cfg, args[0], lang, *args[1:]) for lang in langs}
    names = dict.fromkeys(name for r in results.values() for name in r)
    return {name: {lang: r[name] for lang, r in results.items() if name in r} for name in names}


def stage_corpora(cfg: "Config", run: RunDir) -> None:
    """Every corpus of the run read in full and sharded into the cache (Ray
    tasks, a language each) before any training: a bad row anywhere is an
    error in seconds, not after hours of source training, and the stages
    then read the cache."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora

    for key in keys(Config):
        spec = get(cfg, key.name) if key.path == "corpus" else None
        if spec:
            ingest_corpora(spec, cfg.data.corpus_langs(key.name), run.corpus(CORPUS_FOLDERS[key.name]), cfg.data,
                           cfg.resources.cpus_per_task, max_rows=cfg.data.corpus_max_rows(key.name))


def _no_phase(name: str):
    return contextlib.nullcontext()


def shared_work(cfg: "Config", run: RunDir, stop_after: str | None = None,
                phase=_no_phase) -> tuple[str, Optional[SharedWork]]:
    """The stages before the target stages: every corpus sharded, the source
    model, its pseudo-labels of the target rows, their back-translations.
    Returns the source model and what the target stages start from (None
    when the run stops after the source model). ``phase(name)``: a context
    manager around each (the search times them)."""
    with phase("shared: corpora"):
        stage_corpora(cfg, run)  # every corpus read in full: a bad row stops the run before training
    with phase("shared: source model"):
        source_model = stage_source(cfg, run)
    if stop_after == SOURCE:
        return source_model, None
    with phase("shared: pseudo-labels"):
        corpus, labels = stage_pseudo_labels(cfg, run, source_model)
    with phase("shared: back-translations"):
        translations = stage_backtranslation(cfg, run, corpus) if stop_after != CONL else None
    return source_model, SharedWork(source_model, str(corpus), str(labels), str(translations) if translations else None)


def run_pipeline(cfg: "Config", run: RunDir, stop_after: str | None = None) -> dict:
    """Run (or resume) every stage; returns name -> model directory, or for
    per_language mode name -> {language -> model directory}."""
    source_model, shared = shared_work(cfg, run, stop_after)
    models: dict = {"zero-shot": source_model}
    if shared is not None:
        stages = per_language if cfg.data.target_mode == "per_language" else target_stages
        models.update(stages(cfg, run, shared, stop_after))
    return models
