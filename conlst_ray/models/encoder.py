"""Encoder wrapper used by every stage, and offline tokenizers.

``ConlstEncoder`` wraps any Hugging Face encoder (hub id or local directory;
mBERT and XLM-R in the real configs) and exposes what the algorithm needs:

* ``embed``      pooled sentence embedding h (CLS, mean, or BERT's pooler)
* ``classify``   the classification head theta_cl on h (also used on mixed h, Eq. 9)
* ``contrast``   the linear contrastive head theta_con of Eq. 6
* ``forward``    logits of a tokenised batch

A saved model is a Hugging Face directory of model type ``conlst``
(``models/modeling_conlst.py``): ``config.json`` (the encoder's own config
nested, the pooling, the task and ``id2label``), ``model.safetensors`` (every
weight: encoder, classification head, contrastive head), a copy of
``modeling_conlst.py``, the tokenizer files and a model card (README.md).
``AutoModelForSequenceClassification`` loads it after ``import
conlst_ray.hf`` or with ``trust_remote_code=True``. Folders saved by earlier
versions (the encoder's config + ``conlst_heads.safetensors`` +
``conlst.json``) still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from conlst_ray.data.task import NLI_LABELS
from conlst_ray.models.e5 import is_e5_name
from conlst_ray.models.e5 import resolve as resolve_e5

# what a model folder says about itself, read without torch (the preflight uses these); imported from here too
from conlst_ray.models.model_files import (  # noqa: F401
    AGAIN,
    FORMAT,
    HEADS_FILE,
    META_FILE,
    MODEL_CODE,
    WEIGHTS_FILE,
    ModelError,
    max_text_length,
    read_meta,
)
from conlst_ray.models.modeling_conlst import ConlstConfig, pool

# the tokenizers live in their own module; these names are imported from here by many callers
from conlst_ray.models.tokenizers import (  # noqa: F401
    TINY_BERT,
    build_tokenizer,
    read_vocab,
    synthetic_tokenizer,
    wordpiece_tokenizer,
)
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.files import atomic_write_bytes, safetensors_header, safetensors_problem


class ConlstEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int = 3, contrastive_dim: int = 128,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean", "pooler"):
            raise ValueError(f"model.pooling must be cls, mean or pooler, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        p = getattr(encoder.config, "hidden_dropout_prob", None)
        self.dropout = nn.Dropout(0.1 if p is None else p)
        self.classifier = nn.Linear(hidden, num_labels)
        self.contrastive_head = nn.Linear(hidden, contrastive_dim)
        # the task (data.task: kind and label names), saved with the model so
        # that a model directory says what it reads and what its outputs mean
        self.task: Optional[dict] = None
        # lower layers whose cached states a batch may carry (model.cache_frozen; 0 = none)
        self.frozen_layers = 0
        # language -> logit bias of the class-prior correction (algorithm/prior.py); {} = none
        self.language_bias: dict = {}

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: Optional[torch.Tensor] = None, frozen_hidden: Optional[torch.Tensor] = None,
              frozen_stale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pooled sentence embedding h of a tokenised batch. ``frozen_hidden``:
        the rows' cached states after the frozen lower layers
        (``models/frozen.py``), so only the upper layers run; rows marked in
        ``frozen_stale`` (tokens changed by a view) run the lower layers again."""
        if frozen_hidden is not None and self.frozen_layers:
            return self._embed_from_frozen(input_ids, attention_mask, token_type_ids, frozen_hidden, frozen_stale)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return pool(self.encoder(**kwargs), attention_mask, self.pooling)

    def _embed_from_frozen(self, input_ids, attention_mask, token_type_ids, hidden, stale) -> torch.Tensor:
        from types import SimpleNamespace

        from conlst_ray.models.frozen import run_lower, run_upper

        n = self.frozen_layers
        if stale is not None and bool(stale.any()):
            rows = stale.nonzero().squeeze(1)
            hidden = hidden.clone()
            types = token_type_ids[rows] if token_type_ids is not None else None
            hidden[rows] = run_lower(self.encoder, n, input_ids[rows], attention_mask[rows], types).to(hidden.dtype)
        last = run_upper(self.encoder, n, hidden, attention_mask)
        pooler = getattr(self.encoder, "pooler", None) if self.pooling == "pooler" else None
        out = SimpleNamespace(last_hidden_state=last, pooler_output=pooler(last) if pooler is not None else None)
        return pool(out, attention_mask, self.pooling)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from a sentence embedding (the embedding may be a mixup, Eq. 9)."""
        return self.classifier(self.dropout(h))

    def contrast(self, h: torch.Tensor) -> torch.Tensor:
        """The contrastive head theta_con of Eq. 6: h_i = f(x_i; theta_m, theta_con)."""
        return self.contrastive_head(h)

    def forward(self, input_ids, attention_mask, token_type_ids=None, frozen_hidden=None,
                frozen_stale=None) -> torch.Tensor:
        return self.classify(self.embed(input_ids, attention_mask, token_type_ids, frozen_hidden, frozen_stale))

    # -- persistence ----------------------------------------------------------------
    def hf_config(self):
        """This model as transformers sees it (``models/modeling_conlst.py``)."""
        labels = list(self.task["labels"]) if self.task else [f"LABEL_{i}" for i in range(self.num_labels)]
        return ConlstConfig(encoder=self.encoder.config.to_dict(), pooling=self.pooling,
                            contrastive_dim=self.contrastive_head.out_features, task=self.task,
                            language_bias=self.language_bias,
                            id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
                            architectures=["ConlstForSequenceClassification"],
                            auto_map={"AutoConfig": "modeling_conlst.ConlstConfig",
                                      "AutoModelForSequenceClassification":
                                          "modeling_conlst.ConlstForSequenceClassification"})

    def save(self, path: str | Path, tokenizer=None, card: Optional[dict] = None) -> Path:
        """A Hugging Face folder (see the module docstring); ``card``: what
        the model card says (``models/card.py``)."""
        import shutil

        from safetensors.torch import save

        path = storage.here(path)  # object storage: the caller publishes the folder when complete
        path.mkdir(parents=True, exist_ok=True)
        for earlier in (HEADS_FILE, META_FILE):  # an earlier version's files must not contradict these
            (path / earlier).unlink(missing_ok=True)
        self.hf_config().save_pretrained(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # whole or not at all (a full disk leaves no truncated weights), and a failed write an OSError
        atomic_write_bytes(path / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
        shutil.copyfile(Path(__file__).with_name(MODEL_CODE), path / MODEL_CODE)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        if card is not None:
            from conlst_ray.models.card import write_card

            write_card(path, card)
        return path

    @classmethod
    def load(cls, path: str | Path, pooling: Optional[str] = None, dropout: Optional[float] = None,
             num_labels: Optional[int] = None, contrastive_dim: Optional[int] = None) -> "ConlstEncoder":
        """Load a saved ConlstEncoder (its heads and task as saved), or any HF
        encoder (hub id or directory) with freshly initialised heads. A
        folder in object storage is fetched to this node first."""
        path = storage.fetch(path) if storage.is_remote(path) else path
        local = Path(path)
        meta = read_meta(local)
        if meta.get("format") == FORMAT:
            return cls._load_saved(local, pooling, dropout)
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(str(path))
        _set_dropout(config, dropout)
        encoder = AutoModel.from_pretrained(str(path), config=config)
        model = cls(encoder, num_labels=num_labels or meta.get("num_labels", 3),
                    contrastive_dim=contrastive_dim or meta.get("contrastive_dim", 128),
                    pooling=pooling or meta.get("pooling", "cls"))
        if meta.get("task") and len(meta["task"].get("labels", ())) == model.num_labels:
            model.task = meta["task"]
        if not meta:
            _import_classification_head(model, local, pooling)
        if meta:  # an earlier version's folder: heads in their own file
            from safetensors.torch import load_file

            heads = load_file(str(local / HEADS_FILE))
            model.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items()
                                              if k.startswith("classifier.")})
            model.contrastive_head.load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items()
                                                    if k.startswith("contrastive_head.")})
        return model

    @classmethod
    def _load_saved(cls, path: Path, pooling: Optional[str], dropout: Optional[float]) -> "ConlstEncoder":
        from safetensors.torch import load_file
        from transformers import AutoModel

        config = ConlstConfig.from_pretrained(str(path))
        encoder_config = config.encoder_config()
        _set_dropout(encoder_config, dropout)
        # the weights are overwritten below; building the encoder must not draw from torch's global RNG, or
        # loading a model would shift every later draw (dropout masks) of the seeded stage that loads it
        with torch.random.fork_rng(devices=[]):
            encoder = AutoModel.from_config(encoder_config)
        model = cls(encoder, num_labels=len(config.id2label), contrastive_dim=config.contrastive_dim,
                    pooling=pooling or config.pooling)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError(f"{path}: holds no {WEIGHTS_FILE}")
        if problem := safetensors_problem(weights) or weights_misfit(weights, model):
            raise ModelError(f"{path}: {problem}; {AGAIN}")
        model.load_state_dict(load_file(str(weights)))
        if config.task and len(config.task.get("labels", ())) == model.num_labels:
            model.task = config.task
        model.language_bias = language_bias_of(config, model.num_labels, path)
        return model


def weights_misfit(weights: Path, model: nn.Module) -> Optional[str]:
    """How the tensors a (whole) safetensors file declares differ from the
    model its config.json builds -- the weights of another model, a header
    rewritten --; None when every tensor is there with its shape."""
    header, _ = safetensors_header(weights)
    want = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(header))
    if missing:
        return f"its weights do not fit its config.json: {len(missing)} tensors missing (e.g. {missing[0]})"
    extra = sorted(set(header) - set(want))
    if extra:
        return f"its weights do not fit its config.json: {len(extra)} tensors it does not have (e.g. {extra[0]})"
    wrong = next((k for k in sorted(want) if list(header[k]["shape"]) != want[k]), None)
    if wrong:
        return (f"its weights do not fit its config.json: {wrong} has shape {header[wrong]['shape']}, the config "
                f"builds {want[wrong]}")
    return None


def language_bias_of(config, num_labels: int, path) -> dict:
    """The saved class-prior correction, checked: one number per label for
    every language, or a ModelError naming the folder."""
    bias = getattr(config, "language_bias", None) or {}
    if not isinstance(bias, dict) or any(not isinstance(v, list) or len(v) != num_labels
                                         or not all(isinstance(x, (int, float)) for x in v) for v in bias.values()):
        raise ModelError(f"{path}: config.json's language_bias must map each language to {num_labels} numbers; "
                         f"save the model again")
    return {str(lang): [float(x) for x in v] for lang, v in bias.items()}


def _import_classification_head(model: "ConlstEncoder", path: Path, pooling: Optional[str]) -> None:
    """A plain HF ``*ForSequenceClassification`` directory (e.g. a robustly
    trained or translate-train model given as model.source_checkpoint): carry
    its BERT-style head (``classifier.weight/bias`` over the pooler) over, so
    CoNLST post-trains the classifier it was given. Other head shapes cannot
    be mapped onto one linear layer: say so instead of silently re-initialising."""
    import logging

    weights = path / "model.safetensors"
    if not weights.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as fh:
        keys = set(fh.keys())
        if {"classifier.weight", "classifier.bias"} <= keys:
            w, b = fh.get_tensor("classifier.weight"), fh.get_tensor("classifier.bias")
            if tuple(w.shape) == tuple(model.classifier.weight.shape):
                model.classifier.load_state_dict({"weight": w, "bias": b})
                if pooling not in (None, "pooler"):
                    logging.getLogger(__name__).warning(
                        "%s: imported a classifier trained on the pooler output, but model.pooling=%s",
                        path, pooling)
                if pooling is None:
                    model.pooling = "pooler"
                return
    if any(k.startswith("classifier.") for k in keys):
        logging.getLogger(__name__).warning(
            "%s: its classification head (%s) does not map onto conlst_ray's linear head; "
            "the head starts from scratch", path, sorted(k for k in keys if k.startswith("classifier."))[:3])


def _set_dropout(config, dropout: Optional[float]) -> None:
    if dropout is None:
        return
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)


def tiny_bert(vocab_size: int, tiny_cfg, dropout: Optional[float] = None, pad_token_id: int = 0):
    """A small BERT built from a config (no download): the embedded default's encoder."""
    from transformers import BertConfig, BertModel

    p = 0.1 if dropout is None else dropout
    config = BertConfig(vocab_size=vocab_size, hidden_size=tiny_cfg.hidden_size,
                        num_hidden_layers=tiny_cfg.num_layers, num_attention_heads=tiny_cfg.num_heads,
                        intermediate_size=tiny_cfg.intermediate_size,
                        max_position_embeddings=tiny_cfg.max_position, hidden_dropout_prob=p,
                        attention_probs_dropout_prob=p, pad_token_id=pad_token_id)
    return BertModel(config)


def resolve_pooling(model_cfg) -> str:
    """``model.pooling=auto``: mean for multilingual-e5-small (the pooling it
    was trained with; it has no pooler), the first token otherwise."""
    if model_cfg.pooling != "auto":
        return model_cfg.pooling
    return "mean" if is_e5_name(model_cfg.name_or_path) else "cls"


def build_model(model_cfg, tokenizer, labels=NLI_LABELS, kind: str = "pair") -> ConlstEncoder:
    """The encoder named by ``model.name_or_path`` with the configured heads:
    a classifier over ``labels`` (the task's class names, data.task.labels)."""
    pooling = resolve_pooling(model_cfg)
    if model_cfg.name_or_path == TINY_BERT:
        encoder = tiny_bert(len(tokenizer), model_cfg.tiny, model_cfg.dropout, tokenizer.pad_token_id)
        model = ConlstEncoder(encoder, len(labels), model_cfg.contrastive_dim, pooling)
    else:
        path = resolve_e5(model_cfg.name_or_path, model_cfg.cache_dir)
        model = ConlstEncoder.load(path, pooling=pooling, dropout=model_cfg.dropout,
                                   num_labels=len(labels), contrastive_dim=model_cfg.contrastive_dim)
        if model.num_labels != len(labels):
            raise ValueError(f"model.name_or_path {model_cfg.name_or_path}: its classifier has {model.num_labels} "
                             f"classes, data.task.labels names {len(labels)}")
    model.task = {"kind": kind, "labels": list(labels)}
    return model


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a HF encoder (BERT/XLM-R:
    ``encoder.layer``; others: the first ModuleList named layer(s))."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers"):
            return module
    raise ValueError(f"model.freeze_layers: cannot find the transformer layers of {type(encoder).__name__}")


def apply_freezing(model: ConlstEncoder, model_cfg, freeze_classifier: bool = False) -> dict:
    """``model.freeze_embeddings`` / ``model.freeze_layers``: switch off the
    gradients of the word embeddings and of the lower N layers (and of the
    classification head when ``freeze_classifier``: CoNL under
    ``conl.train_classifier=false``). Returns the counts of trainable and
    frozen parameters (logged by every stage)."""
    if freeze_classifier:
        model.classifier.requires_grad_(False)
    if model_cfg.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    if getattr(model_cfg, "cache_frozen", False):
        from conlst_ray.models.frozen import frozen_modules

        for module in frozen_modules(model.encoder, model_cfg.freeze_layers):  # cached states: all of it fixed
            module.requires_grad_(False)
        model.frozen_layers = model_cfg.freeze_layers
    if model_cfg.freeze_layers:
        layers = transformer_layers(model.encoder)
        if model_cfg.freeze_layers > len(layers):
            raise ValueError(f"model.freeze_layers = {model_cfg.freeze_layers}, but the encoder has "
                             f"{len(layers)} layers")
        for layer in layers[: model_cfg.freeze_layers]:
            layer.requires_grad_(False)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"params_trainable": total - frozen, "params_frozen": frozen}
