"""One run directory per run: every stage writes below it, records what made
it (``FINGERPRINT.json``, written when the stage starts) and marks itself
complete (``DONE.json``) only after its outputs are in place, so ``--resume``
skips it -- but only while its fingerprint still matches. A stage made by
other settings is refused with the differing keys named, or, with
``recompute``, removed together with the stages that read it. ``config.yaml``
is written only after that check, so it always describes the results.

With ``output_dir`` in object storage the root is this machine's mirror of
the run (``storage/mirror.py``): what is read is fetched first, what is
written is published, and listings come from storage."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conlst_ray.config import save_config, with_values
from conlst_ray.config.provenance import DOWNSTREAM, StaleError, config_values, differences, read_json
from conlst_ray.config.stages import SHARDED, SOURCE, TRAINED
from conlst_ray.data.corpora import CORPUS_FOLDERS
from conlst_ray.storage import lock as run_lock
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_text
from conlst_ray.training.stage_files import StageFiles

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


DONE_FILE = "DONE.json"
FINGERPRINT_FILE = "FINGERPRINT.json"
MODEL = "model"
OUTPUTS = "outputs"  # DONE.json of a sharded stage: the shard files it made
HANDED_BACK_RECORD = "handed_back.json"
TRIAL_RECORD = "trial.json"


def stage_files(folder: str | Path, corpus: str | Path | None = None) -> StageFiles:
    """The files of a training stage in ``folder`` (a stage of a run, a
    trial, a test's folder); ``corpus``: the token cache (default: the
    ``corpus`` folder beside the stage, as in a run)."""
    folder = Path(folder)
    return StageFiles(root=folder, model=folder / MODEL, metrics=folder / "metrics.jsonl",
                      steps=folder / "steps.jsonl", checkpoint=folder / "checkpoint" / "train_state.pt",
                      ray_train=folder / "ray_train", thresholds=folder / "thresholds",
                      tensorboard=folder / "tensorboard", corpus=Path(corpus or folder.parent / "corpus"))


class RunDir:
    """A run's folder and every path in it (no other module spells the layout):

        config.yaml                  the resolved config
        corpus/<name>/               cached corpora (target_train, source_train, dev_*) and their token files
        <stage>/                     source, conl, ssl: model/, metrics.jsonl, steps.jsonl, checkpoint/
                                     or ray_train/, thresholds/, tensorboard/ (stage_files); init/model
        pseudo_labels/<name>/        source = the source model's labels of target_train
        translations/<mode>/         back-translations, translate-train
        targets/<lang>/              a per-language sub-run (data.target_mode=per_language)
        results/, analysis/          the report and what its analysis computed
                                     (results/handed_back.json: the selection rule's choice)
        model                        -> the stage model the selection rule hands back

    A Tune trial's folder is laid out the same way (its conl/ and ssl/ stages,
    its config.yaml, trial.json: the shared model it started from); a search's
    folder is ``SearchDir``'s.
    """

    def __init__(self, root: str | Path, recompute: bool = False):
        self.root = Path(root)
        self.recompute = recompute

    # -- the layout ------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def corpus_dir(self) -> Path:
        return self.root / "corpus"

    def corpus(self, name: str) -> Path:
        return self.corpus_dir / name

    @property
    def target_corpus(self) -> Path:
        return self.corpus(CORPUS_FOLDERS["data.target_train"])

    def model(self, stage: str) -> Path:
        return self.root / stage / MODEL

    def prior_model(self, stage: str) -> Path:
        """``stage``'s model with its class-prior correction per language (reporting/prior.py)."""
        return self.root / "prior" / stage / MODEL

    @property
    def given_source_model(self) -> Path:
        """model.source_checkpoint copied into the run (object storage: every node reads it there)."""
        return self.root / "init" / "source_checkpoint"

    def stage_files(self, stage: str) -> StageFiles:
        return stage_files(self.root / stage, self.corpus_dir)

    def done_file(self, stage: str) -> Path:
        return self.root / stage / DONE_FILE

    def done_record(self, stage: str) -> dict | None:
        """What a finished stage recorded (its seconds, metrics, outputs); None when it has not finished."""
        return read_json(storage.fetch(self.done_file(stage)))

    @property
    def handed_back(self) -> Path:
        return self.root / MODEL

    def accuracy_table(self, split: str) -> Path:
        """The report's per-language accuracy table (CSV) of ``split``."""
        return self.results / f"accuracy_{split}.csv"

    @property
    def handed_back_record(self) -> Path:
        return self.results / HANDED_BACK_RECORD

    @property
    def trial_record(self) -> Path:
        """A Tune trial's record of the shared model it started from."""
        return self.root / TRIAL_RECORD

    def pseudo_labels(self, name: str = SOURCE) -> Path:
        return self.root / "pseudo_labels" / name

    def translations(self, mode: str) -> Path:
        return self.root / "translations" / mode

    def target_run(self, lang: str) -> "RunDir":
        return RunDir(self.root / "targets" / lang, recompute=self.recompute)

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @classmethod
    def of(cls, cfg: "Config") -> "RunDir":
        """The run directory a config names (not created)."""
        return cls(storage.mirror(cfg.output_dir) / (cfg.run_name or time.strftime("run-%Y%m%d-%H%M%S")))

    @classmethod
    def create(cls, cfg: "Config", resume: bool = False, recompute: bool = False) -> "RunDir":
        run = cls.of(cfg)
        run.recompute = recompute
        if storage.listdir(run.root) and not resume:
            raise FileExistsError(f"run directory {run.root} exists; pass --resume to continue it "
                                  f"or choose another run_name")
        run.lock()  # before anything is checked, removed or written
        run.check_settings(cfg)
        run.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config_file)
        storage.publish(run.config_file)
        return run

    def lock(self) -> None:
        """One command at a time in a run directory (``storage/lock.py``): a
        second one (another --resume, a report rebuilding while stages run)
        is refused in one line naming the process that holds it."""
        run_lock.acquire(self.root)

    def release(self) -> None:
        """Give up this process's lock on the run directory."""
        run_lock.release(self.root)

    def check_settings(self, cfg: "Config") -> None:
        """Before anything is written: every stage already on disk that
        finished must have been made with the config values it depends on
        (else refused, or redone under ``recompute``). A stage that never
        finished (a failed start, a Ctrl+C) holds nothing to keep: it starts
        over with the new settings, its old checkpoints removed."""
        stale: dict[Path, list[str]] = {}
        unfinished: list[Path] = []
        for fp_file in storage.find(self.root, FINGERPRINT_FILE):
            old = read_json(storage.fetch(fp_file))
            new = config_values(self._stage_cfg(cfg, fp_file.parent), (old or {}).get("keys", []))
            changed = differences({"config": old["config"]}, {"config": new}) if old else ["unreadable fingerprint"]
            if changed and storage.exists(fp_file.parent / DONE_FILE):
                stale[fp_file.parent] = changed
            elif changed:
                unfinished.append(fp_file.parent)
        if stale and not self.recompute:
            first = next(iter(stale.values()))
            where = ", ".join(str(p.relative_to(self.root)) for p in stale)
            raise StaleError(f"{self.root}: finished stages ({where}) were made with other settings: "
                             f"{'; '.join(first)}. Resume with the old values, choose another run_name, "
                             f"or add --recompute to redo them")
        for stage_dir in [*stale, *unfinished]:
            self._remove(stage_dir)

    def _stage_cfg(self, cfg: "Config", stage_dir: Path):
        """A per-language sub-run (RUN/targets/<lang>/<stage>) ran with that language alone."""

        parts = stage_dir.relative_to(self.root).parts
        if len(parts) == 3 and parts[0] == "targets":
            return with_values(cfg, {"data.target_langs": [parts[1]]})
        return cfg

    def _remove(self, stage_dir: Path) -> None:
        """A stale stage and every stage that read it (in this run and in
        per-language sub-runs)."""
        names = [stage_dir.name] + DOWNSTREAM.get(stage_dir.name, [])
        for name in names:
            subruns = [self.root / "targets" / lang / name for lang in storage.listdir(self.root / "targets")]
            for path in [stage_dir.parent / name, *subruns]:
                storage.remove(path)

    def stage(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, name: str) -> bool:
        return storage.exists(self.done_file(name))

    def begin(self, name: str, fingerprint: dict) -> bool:
        """True when stage ``name`` is done, was made by ``fingerprint`` and
        its outputs are intact; False when it must run (its fingerprint is
        then recorded). A stage made otherwise raises StaleError, or is
        removed under ``recompute``; one that never finished starts over; a
        damaged one (its model deleted or cut short) is removed, with the
        stages that read it, and runs again."""
        path = self.root / name
        if self.is_done(name) and (problem := self.damage(name)):  # checked once: it reads every output
            if name in SHARDED:
                # its output is made shard by shard: redo the damaged ones, and the stages after it keep
                # their results (they depend on what made the shards, which has not changed)
                log.info(f"[{name}] {problem}: computing the missing or damaged shards again")
                storage.remove(self.done_file(name))
            else:
                log.info(f"[{name}] {problem}; training it again, and the stages after it")
                self._remove(path)
        old = read_json(storage.fetch(path / FINGERPRINT_FILE))
        if (old is not None or self.is_done(name)) and differences(old, fingerprint):
            changed = differences(old, fingerprint)
            if not self.recompute and self.is_done(name):
                raise StaleError(f"{path}: made with other settings or inputs: {'; '.join(changed)}. "
                                 f"Choose another run_name or add --recompute to redo it")
            self._remove(path)
        elif self.is_done(name):
            return True
        atomic_write_text(self.stage(name) / FINGERPRINT_FILE, json.dumps(fingerprint, indent=2, default=str))
        storage.publish(path / FINGERPRINT_FILE)
        return False

    def damage(self, name: str) -> str | None:
        """What is wrong with the model a finished training stage left (its
        weights missing, unreadable, cut short or longer than they should
        be, its tokenizer unreadable: ``check_model_folder``); None when it
        is whole."""
        from conlst_ray.models.model_files import ModelError, check_model_folder

        if name in SHARDED:
            return self._shard_damage(name)
        if name not in TRAINED:
            return None
        try:
            check_model_folder(storage.fetch(self.model(name)))
        except ModelError as exc:
            return str(exc).split("; ")[0]  # (what to do follows: this stage is trained again)
        return None

    def _shard_damage(self, name: str) -> str | None:
        """The first output shard a finished sharded stage recorded that is
        missing or not what was written (the damaged one removed, so that
        the stage's job computes it again); None when all are whole."""
        from conlst_ray.storage import integrity

        for relative in (self.done_record(name) or {}).get(OUTPUTS, []):
            if problem := integrity.discard_if_damaged(self.root / relative):
                return f"{Path(relative).parent}/{problem}"
        return None

    def mark_done(self, name: str, metrics: dict, outputs: tuple = ()) -> None:
        """Stage ``name`` is complete; ``outputs``: the files a sharded
        stage made (checked on every resume, see ``damage``)."""
        if outputs:
            metrics = {**metrics, OUTPUTS: [str(Path(p).relative_to(self.root)) for p in outputs]}
        atomic_write_text(self.stage(name) / DONE_FILE, json.dumps(metrics, indent=2, default=float))
        storage.publish(self.root / name / DONE_FILE)  # last: the stage's outputs are in storage already


class SearchDir:
    """A search's folders under its storage path (``python -m conlst_ray.tune``):

        <name>-shared/               the shared work: a run (source, corpus, pseudo_labels, ...)
        <name>-trials/trial_<id>/    one folder per trial, laid out as a run (conl/, ssl/, trial.json)
        <name>/                      Ray Tune's state and the search's outputs: best_config.yaml,
                                     best.json, phases.json, trials.{md,csv}, best_* tables, analysis/
    """

    def __init__(self, storage_path: Path, name: str):
        self.storage, self.name = Path(storage_path), name
        self.root = self.storage / name

    @property
    def shared_run_name(self) -> str:
        return f"{self.name}-shared"

    @property
    def trials(self) -> Path:
        return self.storage / f"{self.name}-trials"

    def trial(self, trial_id: str) -> RunDir:
        return trial_run(self.trials, trial_id)

    @staticmethod
    def is_search(folder: Path) -> bool:
        return SearchDir.of(folder).best_config.is_file()

    @property
    def best_config(self) -> Path:
        return self.root / "best_config.yaml"

    @property
    def best_record(self) -> Path:
        return self.root / "best.json"

    @property
    def phases(self) -> Path:
        return self.root / "phases.json"

    def analysis(self, trial: str) -> Path:
        return self.root / "analysis" / trial

    @staticmethod
    def of(folder: Path) -> "SearchDir":
        """The search whose output folder is ``folder``."""
        folder = Path(folder)
        return SearchDir(folder.parent, folder.name)


def trial_of_model(model_dir: str | Path) -> RunDir:
    """The trial (or run) folder that holds a stage model ``.../<stage>/model``."""
    return RunDir(Path(model_dir).parent.parent)


def trial_run(trials: Path, trial_id: str) -> RunDir:
    """A trial's folder in a search's trials folder, named as Tune names the trial."""
    return RunDir(Path(trials) / f"trial_{trial_id}")
