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
        from conlst_ray.data.token_files import open_tokenizer
        from conlst_ray.models.encoder import ConlstEncoder
        from conlst_ray.training.inference import default_device

        self.model_dir = Path(model_dir)
        self.model = ConlstEncoder.load(self.model_dir)
        self.tokenizer = open_tokenizer(str(self.model_dir))
        task = self.model.task or {"kind": "pair", "labels": list(NLI_LABELS)}  # a model saved without its task
        self.kind, self.labels = task["kind"], list(task["labels"])
        self.device, self.max_length = device or default_device(), max_length

    def predict_proba(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                      batch_size: int = 64) -> np.ndarray:
        """[N, C] class probabilities, in the order of ``self.labels``."""
        import pyarrow as pa

        if (text_pairs is None) != (self.kind == "single"):
            need = "texts only" if self.kind == "single" else "texts and text_pairs"
            raise ValueError(f"{self.model_dir} classifies {self.kind} inputs: give {need}")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        columns = {"id": [str(i) for i in range(len(texts))], "lang": [""] * len(texts), "text": list(texts),
                   "label": [-1] * len(texts)}
        if text_pairs is not None:
            columns["text_pair"] = list(text_pairs)
        return self.proba_of(pa.table(columns), batch_size)

    def proba_of(self, table, batch_size: int = 64) -> np.ndarray:
        """[N, C] probabilities of the rows of a corpus table (the readers' schema)."""
        from conlst_ray.training.batches import encode_table
        from conlst_ray.training.inference import predict_proba

        data = encode_table(self.tokenizer, table, self.max_length)
        return predict_proba(self.model, data, self.tokenizer.pad_token_id, batch_size, self.device)

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                batch_size: int = 64) -> list[dict]:
        """Per text: the label, its probability, and every label's."""
        q = self.predict_proba(texts, text_pairs, batch_size)
        return [{"label": self.labels[int(row.argmax())], "confidence": float(row.max()),
                 "probabilities": dict(zip(self.labels, map(float, row)))} for row in q]
