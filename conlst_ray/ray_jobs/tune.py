"""Ray Tune search over CoNLST's hyperparameters: the search space as Tune
domains, what a trial holds, the Tuner with ASHA.

The shared work -- source model, sharded target corpus, initial
pseudo-labels -- is computed once, before any trial. A trial
(``pipeline/search.trial``) drives the CoNL and self-training stages from
that shared state and reports after each; ASHA stops weak trials between
reports. A trial whose stages run in its own process (one worker, no GPU)
reserves that worker's CPUs; a trial that drives Ray Train worker groups
reserves almost none (``{"cpu": 0.01}``), so its workers get the cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conlst_ray.config.search_space import Dimension
from conlst_ray.storage import mirror as storage

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


DRIVER_RESOURCES = {"cpu": 0.01}


def to_tune_domains(dims: list[Dimension]) -> dict:
    from ray import tune

    space = {}
    for d in dims:
        if d.kind == "choice":
            space[d.key] = tune.choice(list(d.values))
        elif d.kind == "grid":
            space[d.key] = tune.grid_search(list(d.values))
        elif d.kind == "uniform":
            space[d.key] = tune.uniform(d.low, d.high)
        elif d.kind == "loguniform":
            space[d.key] = tune.loguniform(d.low, d.high)
        else:
            space[d.key] = tune.randint(int(d.low), int(d.high))
    return space


def trial_resources(cfg: "Config") -> dict:
    """What a trial holds: the worker's CPUs when its stages run in the
    trial's process, else only its driver's share."""
    from conlst_ray.ray_jobs.train import in_process

    if in_process(cfg, cfg.resources.num_workers):
        return {"cpu": cfg.resources.cpus_per_worker}
    return DRIVER_RESOURCES


def concurrency(cfg: "Config") -> int:
    """Trials that fit the cluster at once: its CPUs over one trial's workers."""
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = max(cfg.resources.num_workers, 1) * cfg.resources.cpus_per_worker
    return max(1, int(cpus // per_trial))


def run_search(cfg: "Config", dims: list[Dimension], trial_fn, trial_args: dict, storage_path: Path, name: str,
               resume: bool = False):
    """Fit (or resume) the Tuner; returns its ResultGrid. ``trial_fn(params,
    base, **trial_args)`` runs one trial (``pipeline/search.trial``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    fn = tune.with_resources(tune.with_parameters(trial_fn, base=cfg, **trial_args), trial_resources(cfg))
    path = storage_path / name
    where = storage.remote(storage_path)  # object storage: Tune keeps its state there
    fs, state = (where[0], f"{where[1]}/{name}") if where else (None, str(path))
    if resume and tune.Tuner.can_restore(state, storage_filesystem=fs):
        return tune.Tuner.restore(state, fn, resume_errored=True, storage_filesystem=fs).fit()
    max_t = 2 if cfg.ssl.enabled else 1
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=min(cfg.tune.grace_period, max_t),
                              reduction_factor=cfg.tune.reduction_factor)
    tuner = tune.Tuner(
        fn, param_space=to_tune_domains(dims),
        tune_config=tune.TuneConfig(metric=cfg.tune.metric, mode=cfg.tune.mode, num_samples=cfg.tune.num_samples,
                                    scheduler=scheduler, max_concurrent_trials=concurrency(cfg),
                                    trial_name_creator=short_name, trial_dirname_creator=short_name),
        run_config=tune.RunConfig(name=name, storage_path=where[1] if where else str(storage_path),
                                  storage_filesystem=fs))
    return tuner.fit()


def short_name(trial) -> str:
    """``trial_3f2a1_00001`` instead of Ray's 110-character directory names."""
    return f"trial_{trial.trial_id}"
