"""The study's harness (experiments/real_gain.py): the corpora read and
tokenised once by the pipeline's own Ray tasks, then every row trained in
this process -- the stage objects of conlst_ray.algorithm in the one step
loop (training.loop.fit), as under Ray Train, without a TorchTrainer
start-up per row -- and scored on data.target_test (rows never trained on),
on the GPU when there is one."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from conlst_ray.commands.common import init_ray
from conlst_ray.config import with_values
from conlst_ray.data.corpora import CORPUS_FOLDERS
from conlst_ray.models.language_bias import correct_by_language
from conlst_ray.pipeline.rundir import RunDir, stage_files


@dataclass
class Shared:
    """What every row reads: the tokenised corpora, the tokenizer, the device."""
    cfg: object
    init_dir: Path
    tokenizer: object
    source: object              # labelled source rows
    target: object              # unlabelled target rows (gold kept for analysis only)
    evals: list                 # [source dev rows]: the source stage's kept epoch and the label-free signal
    test: object                # data.target_test rows of English and every target: the scores
    device: torch.device
    q_source: Optional[np.ndarray] = None      # the zero-shot model's q of every target row
    predictions: dict = field(default_factory=dict)   # row -> target-row predictions


def prepare(cfg, out: Path, target_rows: Optional[int] = None) -> Shared:
    """Read and tokenise every corpus (cached under ``out/corpus``) and make
    the initial model (the pretrained encoder and a fresh head). The
    unlabelled target text is capped at ``target_rows`` per language
    (default data.max_rows); the scored test rows at data.max_rows. Under
    model.cache_frozen every row's frozen-layer states are computed here once."""
    import ray

    from conlst_ray.models.encoder import build_model, build_tokenizer
    from conlst_ray.models.tokenizers import open_tokenizer, tokenizer_stamp
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.train import prepare_stage_tokens
    from conlst_ray.ray_jobs.worker import StageInputs, read_eval_rows, read_stage_data
    from conlst_ray.training.optim import seed_everything

    if not ray.is_initialized():
        init_ray()
    init_dir = RunDir(out / f"seed{cfg.seed}").model("init")
    if not (init_dir / "config.json").is_file():
        seed_everything(cfg.seed)  # the head's initialisation: a seed changes the source model too
        tok = build_tokenizer(cfg.model, cfg.data)
        build_model(cfg.model, tok, cfg.data.task.labels, cfg.data.task.kind).save(init_dir, tok)
    corpus_dir = RunDir(out).corpus_dir
    target_root = corpus_dir / CORPUS_FOLDERS["data.target_train"]
    ingest_corpora(cfg.data.target_train, cfg.data.target_langs, target_root, cfg.data, cfg.resources.cpus_per_task,
                   max_rows=target_rows or cfg.data.corpus_max_rows("data.target_train"))
    inputs = StageInputs(target_corpus=str(target_root), langs=list(cfg.data.target_langs), corpus_dir=str(corpus_dir))
    tokens = prepare_stage_tokens("ssl", cfg, str(init_dir), inputs)
    tokens["test"] = test_tokens(cfg, corpus_dir, init_dir)
    stamp = tokenizer_stamp(str(init_dir), cfg.data.max_length)
    source, target = read_stage_data(tokens, stamp)
    evals = read_eval_rows(tokens, stamp)
    test = read_eval_rows({"eval": [tokens["test"]]}, stamp)[0]
    device = torch.device("cuda" if cfg.resources.use_gpu and torch.cuda.is_available() else "cpu")
    if cfg.model.cache_frozen:
        from conlst_ray.ray_jobs.worker import attach_frozen

        model = load(init_dir, cfg, "source", device)
        for rows, entry in [(source, tokens["source"]), (target, tokens["target"]), (test, tokens["test"])] + list(
                zip(evals, tokens.get("eval", []))):
            attach_frozen(rows, entry, model, cfg, device)
        del model
    return Shared(cfg, init_dir, open_tokenizer(init_dir), source, target, evals, test, device)


def test_tokens(cfg, corpus_dir: Path, init_dir: Path) -> list:
    """data.target_test in the source language and every target (English is
    scored on the same held-out rows), tokenised: [folder, languages]."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.tokens import tokenize_cached_corpus

    if not cfg.data.target_test:
        raise ValueError("the study scores on data.target_test, which is not set")
    langs = [cfg.data.source_lang] + list(cfg.data.target_langs)
    root = corpus_dir / CORPUS_FOLDERS["data.target_test"]
    manifests = ingest_corpora(cfg.data.target_test, langs, root, cfg.data, cfg.resources.cpus_per_task)
    folder = tokenize_cached_corpus(root, manifests, str(init_dir), cfg.data.max_length,
                                    cfg.resources.cpus_per_task)
    return [str(folder), langs]


# -- scoring ---------------------------------------------------------------------------------

def _q(shared: Shared, model, rows) -> np.ndarray:
    from conlst_ray.training.inference import predict_proba

    c = shared.cfg
    q = predict_proba(model, rows, shared.tokenizer.pad_token_id, c.source.eval_batch_size, shared.device,
                      c.resources.precision)
    model.train()
    return q


def score(shared: Shared, model, bias: Optional[dict] = None) -> dict:
    """Accuracy (%) per language on the test rows (data.target_test: English
    and every target), and recall (%) per gold class over the target
    languages' test rows (``recall_<label>``); ``bias``: a class-prior
    correction per language applied to the model's outputs."""
    from conlst_ray.training.inference import accuracy_by_language

    q = _q(shared, model, shared.test)
    if bias:
        q = correct_by_language(q, shared.test.langs, bias)
    out = {lang: 100 * acc for lang, acc in accuracy_by_language(q, shared.test).items()}
    pred, gold = q.argmax(-1), shared.test.labels
    targets = np.isin(np.asarray(shared.test.langs), list(shared.cfg.data.target_langs))
    for c, label in enumerate(shared.cfg.data.task.labels):
        mine = targets & (gold == c)
        out[f"recall_{label}"] = 100 * float((pred[mine] == c).mean()) if mine.any() else float("nan")
    return out


def source_dev(shared: Shared, model) -> float:
    """Source dev accuracy (%): the kept source epoch and the label-free signal."""
    from conlst_ray.training.inference import dev_metrics

    metrics = dev_metrics(model, shared.evals, shared.tokenizer.pad_token_id, shared.device, shared.cfg)
    return 100 * metrics["source_dev_acc"]


def prior_bias(shared: Shared, q: np.ndarray, how: str) -> dict:
    """Per target language, the logit bias of the class-prior correction
    (selection.prior ``how``) estimated from the unlabelled rows' ``q``, as
    a run's report estimates it (reporting/prior.py)."""
    from conlst_ray.algorithm.prior import class_shares
    from conlst_ray.reporting.prior import estimates

    langs = np.asarray(shared.target.langs)
    est = estimates({lang: q[langs == lang] for lang in shared.cfg.data.target_langs},
                    class_shares(shared.source.labels, q.shape[1]))
    return {lang: e["bias"][how] for lang, e in est.items()}


def target_predictions(shared: Shared, model) -> np.ndarray:
    """q of every unlabelled target row."""
    return _q(shared, model, shared.target)


# -- training --------------------------------------------------------------------------------

def load(model_dir, cfg, stage: str, device):
    """A model as a stage trains it: frozen as configured, in train mode."""
    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.ray_jobs.worker import freeze

    torch.manual_seed(cfg.seed)  # as a Ray Train worker does before its stage
    model = ConlstEncoder.load(model_dir)
    freeze(model, cfg, stage)
    return model.to(device).train()


def train_source(shared: Shared, out: Path, log=print, given: Optional[str] = None) -> tuple[Path, list]:
    """Source fine-tuning, kept at its best epoch on the English dev set (no
    target label read): the model every row starts from, and the curve. The
    pipeline's own end-of-epoch hooks: dev accuracy, then the kept epoch.
    ``given``: a source model a run trained (its curve read from the run's
    ``source/metrics.jsonl``), used as it is."""
    from conlst_ray.algorithm.base import SourceTraining
    from conlst_ray.training.loop import EvaluateDev, KeepBestEpoch, StepModule, run_epochs

    if given:
        metrics = stage_files(Path(given).parent).metrics  # the stage folder the model is in
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        return Path(given), [{"epoch": r["epoch"], "source_dev_acc": 100 * r["source_dev_acc"], "given": given}
                             for r in map(json.loads, lines) if "source_dev_acc" in r]
    run = RunDir(out / f"seed{shared.cfg.seed}")
    cfg, model_out, done = shared.cfg, run.model("source"), run.done_file("source")
    if done.is_file():
        return model_out, json.loads(done.read_text())["curve"]
    model = load(shared.init_dir, cfg, "source", shared.device)
    algo = SourceTraining(model, cfg, shared.tokenizer, shared.device, shared.source)
    curve = Curve(log)
    best = KeepBestEpoch(model, cfg, model_out, shared.tokenizer)
    run_epochs(algo, StepModule(model, cfg.resources.precision),
               [EvaluateDev(model, shared.evals, shared.tokenizer.pad_token_id, cfg, shared.device), best, curve],
               prefetch_depth=cfg.resources.prefetch_batches)
    done.write_text(json.dumps({"curve": curve.points, "best_epoch": best_epoch(curve.points)}))
    return model_out, curve.points


class Curve:
    """An end-of-epoch hook: the source stage's loss and English dev accuracy (%)."""

    def __init__(self, log):
        self.log, self.points, self.t0 = log, [], time.time()

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        en, seconds = 100 * record["source_dev_acc"], time.time() - self.t0
        self.points.append({"epoch": epoch, "step": step, "loss": record.get("loss"), "source_dev_acc": en,
                            "seconds": seconds})
        self.log(f"[source] epoch {epoch}: loss {record.get('loss', float('nan')):.3f}, English dev {en:.1f} "
                 f"({seconds:.0f} s)")


def best_epoch(points: list) -> int:
    """The first epoch with the best dev accuracy (the one KeepBestEpoch kept)."""
    return max(points, key=lambda p: (p["source_dev_acc"], -p["epoch"]))["epoch"]


def weight_change(before: dict, model, steps: int) -> dict:
    """Relative L2 change of each part (encoder, classification head,
    contrastive head), and the mean absolute change of a trainable encoder
    weight per optimizer step (Adam moves each weight by about the rate per
    step, whatever the loss)."""
    parts: dict = {"encoder": [0.0, 0.0], "classifier": [0.0, 0.0], "contrastive_head": [0.0, 0.0]}
    abs_sum, count = 0.0, 0
    for name, p in model.named_parameters():
        part = name.split(".", 1)[0] if name.split(".", 1)[0] in parts else "encoder"
        d = (p.detach().float() - before[name].float())
        parts[part][0] += float(d.pow(2).sum())
        parts[part][1] += float(before[name].float().pow(2).sum())
        if part == "encoder" and p.requires_grad:  # frozen weights never move: they would dilute the mean
            abs_sum, count = abs_sum + float(d.abs().sum()), count + d.numel()
    out = {f"change_{k}": (s / max(n, 1e-30)) ** 0.5 for k, (s, n) in parts.items()}
    out["encoder_step_per_weight"] = abs_sum / max(count, 1) / max(steps, 1)
    return out


def trained_label_accuracy(algo) -> Optional[float]:
    """Accuracy of the labels a self-training iteration trained on."""
    gold = getattr(algo.target, "gold", None)
    sel = algo.selected[gold[algo.selected] >= 0] if gold is not None else []
    return float((algo.pred[sel] == gold[sel]).mean()) if len(sel) else None


class EpochLog:
    """An end-of-epoch hook keeping each epoch's logs (without the stage,
    epoch and step tags) and, for self-training, the accuracy of the labels
    the iteration trained on."""

    def __init__(self, ssl_algo=None):
        self.ssl_algo, self.records = ssl_algo, []

    def after_epoch(self, epoch: int, step: int, record: dict) -> None:
        logs = {k: v for k, v in record.items() if k not in ("stage", "epoch", "step")}
        if self.ssl_algo is not None:
            logs["trained_label_acc"] = trained_label_accuracy(self.ssl_algo)
        self.records.append(logs)


def train_row(shared: Shared, stage: str, cls, start_dir: Path, overrides: dict, steps_file: Path,
              save_to: Optional[Path] = None) -> tuple[object, dict]:
    """One row: ``cls`` (a stage object or a probe subclass) trained from the
    model in ``start_dir`` under the study's config plus ``overrides``.
    Returns the trained model and what was measured."""
    from conlst_ray.training.loop import StepModule, run_epochs

    cfg = with_values(shared.cfg, overrides)
    model = load(start_dir, cfg, stage, shared.device)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    extra = (shared.q_source,) if stage == "conl" else ()
    algo = cls(model, cfg, shared.tokenizer, shared.device, shared.source, shared.target, *extra)
    epochs, t0 = EpochLog(algo if stage == "ssl" else None), time.time()
    last = run_epochs(algo, StepModule(model, cfg.resources.precision), [epochs],
                      prefetch_depth=cfg.resources.prefetch_batches, steps_file=steps_file)
    step, epochs = last.get("step", 0), epochs.records
    seconds = time.time() - t0
    if stage == "conl":
        epochs[-1].update({f"pool_{k}": v for k, v in algo.pool.stats.items()})
    if save_to is not None:
        model.save(save_to, shared.tokenizer)
    return model, {"steps": step, "seconds": seconds, "epochs": epochs, **weight_change(before, model, step)}
