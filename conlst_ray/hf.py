"""``import conlst_ray.hf`` registers conlst_ray's saved models with
transformers' Auto classes (model_type ``conlst``), so that

    AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)

loads a stage model with its trained head and its labels (``id2label``).
Without this import transformers refuses the folder (unknown model type)
unless ``trust_remote_code=True`` is given, which runs the copy of
``modeling_conlst.py`` saved beside the weights."""

from transformers import AutoConfig, AutoModelForSequenceClassification

from conlst_ray.models.model_files import check_model_folder
from conlst_ray.models.modeling_conlst import ConlstConfig
from conlst_ray.models.modeling_conlst import ConlstForSequenceClassification as _Unchecked


class ConlstForSequenceClassification(_Unchecked):
    """The saved model's class, loaded only after ``check_model_folder``
    (weights whole, tokenizer readable): a damaged folder is one
    ModelError naming it, not a traceback from deep in safetensors."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from pathlib import Path

        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            check_model_folder(folder)
            _check_fit(cls, folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def _check_fit(cls, folder) -> None:
    """The tensors of the folder's weights against the model its config.json
    builds (built on the meta device: shapes only, no memory)."""
    import torch

    from conlst_ray.models.encoder import AGAIN, WEIGHTS_FILE, ModelError, weights_misfit

    config = ConlstConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = _Unchecked(config)
    problem = weights_misfit(folder / WEIGHTS_FILE, model)
    if problem:
        raise ModelError(f"{folder}: {problem}; {AGAIN}")


try:
    AutoConfig.register("conlst", ConlstConfig)
    AutoModelForSequenceClassification.register(ConlstConfig, ConlstForSequenceClassification)
except ValueError:  # registered already (a reload): the mapping is the same
    pass

__all__ = ["ConlstConfig", "ConlstForSequenceClassification"]
