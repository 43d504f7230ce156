"""``import conlst_ray.hf`` registers conlst_ray's saved models with
transformers' Auto classes (model_type ``conlst``), so that

    AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)

loads a stage model with its trained head and its labels (``id2label``).
Without this import transformers refuses the folder (unknown model type)
unless ``trust_remote_code=True`` is given, which runs the copy of
``modeling_conlst.py`` saved beside the weights."""

from transformers import AutoConfig, AutoModelForSequenceClassification

from conlst_ray.models.modeling_conlst import ConlstConfig, ConlstForSequenceClassification

try:
    AutoConfig.register("conlst", ConlstConfig)
    AutoModelForSequenceClassification.register(ConlstConfig, ConlstForSequenceClassification)
except ValueError:  # registered already (a reload): the mapping is the same
    pass

__all__ = ["ConlstConfig", "ConlstForSequenceClassification"]
