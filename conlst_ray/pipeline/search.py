"""One trial of the Ray Tune search (``ray_jobs/tune.run_search`` runs it):
CoNL then self-training from the search's shared source model and
pseudo-labels, in the trial's own folder (``SearchDir.trial``), reporting
the selection metric after each stage so that ASHA can stop it early."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from conlst_ray.config import save_config
from conlst_ray.config.search_space import apply
from conlst_ray.config.stages import CONL, SSL
from conlst_ray.pipeline.rundir import RunDir, trial_run
from conlst_ray.pipeline.stages import SharedWork
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


def tokenize_for_trials(cfg: "Config", shared: SharedWork) -> None:
    """Every corpus a trial reads, tokenised once before the trials start:
    trials only map the files (their stages would otherwise tokenise the same
    rows, each trial again)."""
    from conlst_ray.ray_jobs.train import prepare_stage_tokens
    from conlst_ray.ray_jobs.worker import StageInputs

    inputs = StageInputs(target_corpus=shared.corpus, translations=shared.translations,
                         langs=list(cfg.data.target_langs), corpus_dir=shared.corpus_dir)
    prepare_stage_tokens(SSL, cfg, shared.source_model, inputs)  # the last target stage reads them all


def trial(params: dict, base, shared: SharedWork, trials_dir: str) -> None:
    """One trial from the search's shared work, in its folder below ``trials_dir``."""
    import ray.tune

    from conlst_ray.ray_jobs.train import fit_stage
    from conlst_ray.ray_jobs.worker import StageInputs

    cfg = apply(base, params)
    run = trial_run(storage.here(trials_dir), ray.tune.get_context().get_trial_id())
    describe_trial(run, cfg, shared)
    # One worker without a GPU: the stages run in the trial's own process (the
    # trial holds the worker's CPUs, see ray_jobs/tune.trial_resources); otherwise
    # each stage gets a Ray Train worker group.
    inputs = StageInputs(target_corpus=shared.corpus, langs=list(cfg.data.target_langs),
                         corpus_dir=shared.corpus_dir)
    t0 = time.time()
    metrics = fit_stage(CONL, cfg, run.stage_files(CONL), shared.source_model,
                        replace(inputs, pseudo_labels=shared.labels))
    seconds = {"seconds_conl": round(time.time() - t0, 1)}  # each report carries every stage's so far
    ray.tune.report({**trial_report(metrics, cfg, 1, run.model(CONL)), **seconds})
    if cfg.ssl.enabled:
        t0 = time.time()
        metrics = fit_stage(SSL, cfg, run.stage_files(SSL), str(run.model(CONL)),
                            replace(inputs, translations=shared.translations))
        seconds["seconds_ssl"] = round(time.time() - t0, 1)
        ray.tune.report({**trial_report(metrics, cfg, 2, run.model(SSL)), **seconds})


def describe_trial(run: RunDir, cfg: "Config", shared: SharedWork) -> None:
    """The trial's resolved config, the shared model it starts from and the
    node it ran on, so that ``python -m conlst_ray.report TRIAL_DIR`` can
    report it alone."""
    import ray

    run.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config_file)
    where = {"source_model": shared.source_model, "node": ray.get_runtime_context().get_node_id()}
    atomic_write_text(run.trial_record, json.dumps(where, indent=2))
    for path in (run.config_file, run.trial_record):
        storage.publish(path)


def trial_report(metrics: dict, cfg: "Config", stage: int, model_dir) -> dict:
    """What a trial reports after a stage: the search metric first (Tune's
    live table shows the first metrics reported), accuracies in percent
    like every other table, then the stage's other numbers."""
    numeric = {k: 100 * v if is_accuracy(k) else v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    first = {cfg.tune.metric: numeric.pop(cfg.tune.metric)} if cfg.tune.metric in numeric else {}
    return {**first, "stage": stage, **numeric, "model_dir": str(model_dir)}


def is_accuracy(key: str) -> bool:
    return key.endswith("_acc") or key.startswith("acc_")
