"""Ray Tune search over CoNLST's hyperparameters (Train V2 driver pattern).

The shared work -- source model, sharded target corpus, initial
pseudo-labels -- is computed once, before any trial. A trial is a function
that drives the CoNL and self-training stages (each a ``TorchTrainer``) from
that shared state and reports after each; ASHA stops weak trials between
reports. Drivers reserve almost no CPU (``{"cpu": 0.01}``), so on a small
machine the trials' training workers get the cores.
"""

from __future__ import annotations

from pathlib import Path

from conlst_ray.data import storage

from conlst_ray.ray_jobs.search_space import Dimension, apply

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


def trial(params: dict, base: dict, shared: dict) -> None:
    """One trial: CoNL then self-training from the shared source model and
    pseudo-labels, reporting the selection metric after each stage."""
    import ray.tune

    from conlst_ray.ray_jobs.train import fit_stage

    cfg = apply(base, params)
    # Train V2 rejects ray.train calls made in-process inside a Tune trial, so
    # a trial's stages always get a worker group of their own.
    if cfg.resources.num_workers == 0:
        cfg = apply(cfg, {"resources.num_workers": 1})
    trial_dir = storage.here(shared["trials_dir"]) / f"trial_{ray.tune.get_context().get_trial_id()}"  # as Tune names it
    describe_trial(trial_dir, cfg, shared)
    metrics = fit_stage("conl", cfg, trial_dir / "conl", shared["source_model"],
                        target_corpus=shared["corpus"], pseudo_labels=shared["pseudo_labels"],
                        langs=list(cfg.data.target_langs), corpus_dir=shared["corpus_dir"])
    ray.tune.report(trial_report(metrics, cfg, 1, trial_dir / "conl" / "model"))
    if cfg.ssl.enabled:
        metrics = fit_stage("ssl", cfg, trial_dir / "ssl", str(trial_dir / "conl" / "model"),
                            target_corpus=shared["corpus"], translations=shared.get("translations"),
                            langs=list(cfg.data.target_langs), corpus_dir=shared["corpus_dir"])
        ray.tune.report(trial_report(metrics, cfg, 2, trial_dir / "ssl" / "model"))


def describe_trial(trial_dir: Path, cfg, shared: dict) -> None:
    """The trial's resolved config and the shared model it starts from, so
    that ``python -m conlst_ray.report TRIAL_DIR`` can report it alone."""
    import json

    from conlst_ray.config import save_config
    from conlst_ray.data.files import atomic_write_text

    trial_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, trial_dir / "config.yaml")
    atomic_write_text(trial_dir / "trial.json", json.dumps({"source_model": shared["source_model"]}, indent=2))
    for name in ("config.yaml", "trial.json"):
        storage.publish(trial_dir / name)


def trial_report(metrics: dict, cfg, stage: int, model_dir: Path) -> dict:
    """What a trial reports after a stage: the search metric first (Tune's
    live table shows the first metrics reported), accuracies in percent
    like every other table, then the stage's other numbers."""
    numeric = {k: 100 * v if is_accuracy(k) else v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    first = {cfg.tune.metric: numeric.pop(cfg.tune.metric)} if cfg.tune.metric in numeric else {}
    return {**first, "stage": stage, **numeric, "model_dir": str(model_dir)}


def is_accuracy(key: str) -> bool:
    return key.endswith("_acc") or key.startswith("acc_")


def concurrency(cfg) -> int:
    """Trials that fit the cluster at once: its CPUs over one trial's workers."""
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = max(cfg.resources.num_workers, 1) * cfg.resources.cpus_per_worker
    return max(1, int(cpus // per_trial))


def run_search(cfg, dims: list[Dimension], shared: dict, storage_path: Path, name: str, resume: bool = False):
    """Fit (or resume) the Tuner; returns its ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    fn = tune.with_resources(tune.with_parameters(trial, base=cfg, shared=shared), DRIVER_RESOURCES)
    path = storage_path / name
    where = storage.remote(storage_path)  # object storage: Tune keeps its state there
    fs, state = (where[0], f"{where[1]}/{name}") if where else (None, str(path))
    if resume and tune.Tuner.can_restore(state, storage_filesystem=fs):
        return tune.Tuner.restore(state, fn, resume_errored=True, storage_filesystem=fs).fit()
    max_t = 2 if cfg.ssl.enabled else 1
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=min(cfg.tune.grace_period, max_t), reduction_factor=cfg.tune.reduction_factor)
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
