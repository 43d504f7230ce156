"""A trained model with its tokenizer and label names, for labelling new
text (the Python API's ``load_model`` and ``python -m conlst_ray.predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from conlst_ray.data.task import NLI_LABELS


class Classifier:
    """A saved conlst_ray model (any stage's ``model/`` folder or a run's
    ``model`` link) with its tokenizer and the names of its labels."""

    def __init__(self, model_dir: str | Path, device: Optional[str] = None, max_length: int = 128):
        from conlst_ray.models.encoder import ConlstEncoder
        from conlst_ray.models.model_files import check_model_folder
        from conlst_ray.models.tokenizers import open_tokenizer
        from conlst_ray.training.inference import default_device

        check_model_folder(model_dir, max_length)
        self.model_dir = Path(model_dir)
        self.model = ConlstEncoder.load(self.model_dir)
        self.tokenizer = open_tokenizer(str(self.model_dir))
        task = self.model.task or {"kind": "pair", "labels": list(NLI_LABELS)}  # a model saved without its task
        self.kind, self.labels = task["kind"], list(task["labels"])
        self.device, self.max_length = device or default_device(), max_length

    def predict_proba(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                      batch_size: int = 64, lang: Optional[str] = None) -> np.ndarray:
        """[N, C] class probabilities, in the order of ``self.labels``; a
        single string is one text (one pair with a single string pair).
        ``lang``: the texts' language, whose class-prior correction a
        prior-corrected model applies (``self.language_bias``)."""
        import pyarrow as pa

        texts, text_pairs = as_rows(texts), (None if text_pairs is None else as_rows(text_pairs))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: must be a whole number of at least 1")
        if (text_pairs is None) != (self.kind == "single"):
            need = "texts only" if self.kind == "single" else "texts and text_pairs"
            raise ValueError(f"{self.model_dir} classifies {self.kind} inputs: give {need}")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        self._check_lang(lang)
        columns = {"id": [str(i) for i in range(len(texts))], "lang": [lang or ""] * len(texts), "text": list(texts),
                   "label": [-1] * len(texts)}
        # the readers' schema: a single-text row has a null second text
        pairs = list(text_pairs) if text_pairs is not None else [None] * len(texts)
        columns["text_pair"] = pa.array(pairs, pa.string())
        return self.proba_of(pa.table(columns), batch_size)

    def proba_of(self, table, batch_size: int = 64) -> np.ndarray:
        """[N, C] probabilities of the rows of a corpus table (the readers' schema)."""
        from conlst_ray.models.language_bias import correct_by_language
        from conlst_ray.training.batches import encode_table
        from conlst_ray.training.inference import predict_proba

        data = encode_table(self.tokenizer, table, self.max_length)
        q = predict_proba(self.model, data, self.tokenizer.pad_token_id, batch_size, self.device)
        return correct_by_language(q, table.column("lang").to_pylist(), self.language_bias)

    @property
    def language_bias(self) -> dict:
        """Language -> logit bias of a prior-corrected model ({} for a stage model)."""
        return self.model.language_bias

    def _check_lang(self, lang: Optional[str]) -> None:
        if lang is not None and not isinstance(lang, str):
            raise ValueError(f"lang {lang!r}: a language code such as 'fr'")
        if self.language_bias and lang is None:
            import warnings

            warnings.warn(f"{self.model_dir} corrects its outputs per language "
                          f"({', '.join(self.language_bias)}): pass lang= to apply it; uncorrected outputs given",
                          stacklevel=3)

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                batch_size: int = 64, lang: Optional[str] = None) -> list[dict]:
        """Per text: the label, its probability, and every label's; ``lang``
        as in ``predict_proba``."""
        q = self.predict_proba(texts, text_pairs, batch_size, lang)
        return [{"label": self.labels[int(row.argmax())], "confidence": float(row.max()),
                 "probabilities": dict(zip(self.labels, map(float, row)))} for row in q]


def as_rows(texts) -> list:
    """A string is one row, not one row per character."""
    return [texts] if isinstance(texts, str) else list(texts)
