"""A stage model with a class-prior correction per language, saved as a
model folder of its own: the stage's files linked (not copied: the weights
are the same bytes), ``config.json`` carrying ``language_bias``, and a model
card saying how to apply it to the logits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from conlst_ray.storage.files import atomic_write_text

CARD_NOTE = """
## Class-prior correction per language

This folder is the model of `{base}` with a correction of its outputs per
target language, estimated from that language's unlabelled rows without
labels ({how}). `config.json` holds it as `language_bias`: for a row in
language `lang`, add it to the logits, then take the softmax or argmax:

```python
logits = model(**batch).logits + torch.tensor(model.config.language_bias[lang])
```

`python -m conlst_ray.predict` and `conlst_ray.load_model(...).predict(..., lang=...)`
apply it themselves. Rows of a language it does not list (the source
language) are left as they are.

| language | {labels} |
|---|{sep}
{rows}
"""


def save_corrected(model_dir: str | Path, bias: dict, out: str | Path, how: str) -> Path:
    """``out``: the model of ``model_dir`` with ``bias`` (language -> logit
    bias per label) in its config; written whole, then renamed into place."""
    src, out = Path(model_dir), Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and path.name not in ("config.json", "README.md"):
            _link_or_copy(path, tmp / path.name)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["language_bias"] = {lang: [round(float(x), 6) for x in b] for lang, b in bias.items()}
    atomic_write_text(tmp / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    card = (src / "README.md").read_text(encoding="utf-8") if (src / "README.md").is_file() else ""
    rows = "\n".join(f"| {lang} | " + " | ".join(f"{x:+.3f}" for x in b) + " |" for lang, b in bias.items())
    atomic_write_text(tmp / "README.md", card + CARD_NOTE.format(base=src, how=how, labels=" | ".join(labels),
                                                                 sep="---|" * len(labels), rows=rows))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (the weights are hundreds
    of MB), a copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

