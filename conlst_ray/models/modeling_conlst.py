"""A conlst_ray classifier as a Hugging Face model, so that a saved stage
model loads the way every transformers user loads a classifier:

    import conlst_ray.hf  # registers model_type "conlst" with the Auto classes
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

or, without conlst_ray installed, ``from_pretrained(model_dir,
trust_remote_code=True)``: this file is copied beside every saved model's
weights, so it imports nothing from conlst_ray. Without either, transformers
refuses the unknown model type -- it never attaches a random head.

The model is the pretrained encoder (any ``AutoModel``; its own config kept
in ``config.encoder``), the pooling conlst_ray trained with (first token,
mean over the tokens, or BERT's pooler), the classification head and the
contrastive head of Eq. 6 (unused by ``forward``, kept so the saved weights
are the whole trained model).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("cls", "mean", "pooler")


class ConlstConfig(PretrainedConfig):
    model_type = "conlst"

    def __init__(self, encoder: Optional[dict] = None, pooling: str = "cls", contrastive_dim: int = 128,
                 task: Optional[dict] = None, language_bias: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = dict(encoder or {})  # the encoder's own config.json, model_type included
        self.pooling = pooling
        self.contrastive_dim = contrastive_dim
        self.task = task  # conlst_ray's task: {"kind": "pair" | "single", "labels": [...]}
        # a class-prior correction per language ({"fr": [b_0, b_1, ...]}): the logits of a row in that
        # language are logits + language_bias[lang]. forward() does not know a row's language, so it
        # returns the uncorrected logits; the model card shows the one line that applies it
        self.language_bias = dict(language_bias or {})

    def encoder_config(self, **overrides) -> PretrainedConfig:
        values = dict(self.encoder)
        model_type = values.pop("model_type")
        return AutoConfig.for_model(model_type, **{**values, **overrides})


def pool(encoder_output, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The sentence embedding h: the first token, the mean over the real
    tokens, or BERT's pooler output."""
    if pooling == "pooler":
        if getattr(encoder_output, "pooler_output", None) is None:
            raise ValueError("pooling=pooler but this encoder has no pooler; use cls or mean")
        return encoder_output.pooler_output
    hidden = encoder_output.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class ConlstForSequenceClassification(PreTrainedModel):
    config_class = ConlstConfig
    base_model_prefix = "encoder"

    def __init__(self, config: ConlstConfig):
        super().__init__(config)
        encoder_config = config.encoder_config()
        self.encoder = AutoModel.from_config(encoder_config)
        p = getattr(encoder_config, "hidden_dropout_prob", None)
        self.dropout = nn.Dropout(0.1 if p is None else p)
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.contrastive_head = nn.Linear(encoder_config.hidden_size, config.contrastive_dim)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and module in (self.classifier, self.contrastive_head):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        h = pool(self.encoder(**inputs), attention_mask, self.config.pooling)
        logits = self.classifier(self.dropout(h))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
