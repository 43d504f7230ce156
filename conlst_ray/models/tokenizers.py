"""Every tokenizer a run uses, in one place: built offline (WordPiece from a
vocabulary file -- the real mBERT vocabulary --, the embedded benchmark's
word-level one, or a model's own: ``model.tokenizer``), stamped (what makes
its token ids: the key of every token file), fetched from object storage,
opened, and kept verbatim from stage to stage."""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

from conlst_ray.data.synthetic import SyntheticBenchmark, write_vocab
from conlst_ray.models.e5 import resolve as resolve_e5
from conlst_ray.models.model_files import TOKENIZER_FILES, tokenizer_problem
from conlst_ray.storage import mirror as storage


def tokenizer_stamp(tokenizer_dir: str | Path, max_length: int) -> str:
    """What makes token ids: the tokenizer's files (content) and the
    truncation length. Two model folders holding the same tokenizer have the
    same stamp, so their stages share one tokenised corpus."""
    h = hashlib.sha256(f"max_length={max_length}".encode())
    tokenizer_dir = fetch_tokenizer(tokenizer_dir)
    found = [Path(tokenizer_dir) / name for name in TOKENIZER_FILES if (Path(tokenizer_dir) / name).is_file()]
    if not found:  # else every tokenizer would share one stamp
        raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...)")
    for f in found:
        h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def fetch_tokenizer(path) -> Path | str:
    """This node's copy of a model folder's tokenizer files (object storage:
    those files only, not the weights); a hub id as it is."""
    if not storage.is_remote(path):
        return path
    return storage.fetch(path, names=(*TOKENIZER_FILES, "config.json"))  # one listing of the folder


def open_tokenizer(path) -> object:
    """The tokenizer of a model folder or hub id. A folder conlst_ray saved
    declares model type ``conlst``, which transformers only knows after
    ``import conlst_ray.hf``; its tokenizer is a standard one, so the
    config is read without running the folder's model code (transformers
    would otherwise stop to ask whether to run it), as its encoder's own
    config (else transformers warns of a ``conlst`` model read as another)."""
    from transformers import AutoTokenizer

    folder = fetch_tokenizer(path)
    encoder = _saved_encoder_config(folder)
    extra = {"config": encoder} if encoder else {}
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, **extra)
    except Exception:
        if Path(str(folder)).is_dir():  # damaged files: one ModelError naming the folder, not a KeyError from inside
            tokenizer_problem(Path(str(folder)))  # (checked only after a failure: a 17 MB tokenizer.json parses in 1 s)
        raise


def _saved_encoder_config(folder):
    """The encoder config inside a folder conlst_ray saved (model type
    ``conlst``); None for any other folder or a hub id."""
    import json

    config = Path(str(folder)) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    except ValueError:
        return None
    encoder = data.get("encoder") if data.get("model_type") == "conlst" else None
    if not isinstance(encoder, dict) or "model_type" not in encoder:
        return None
    from transformers import AutoConfig

    return AutoConfig.for_model(**encoder)


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """One tokenizer per worker process (Ray reuses task workers)."""
    return open_tokenizer(path)


def keep_tokenizer_files(src: str | Path, dst: str | Path) -> None:
    """Copy ``src``'s tokenizer files over those ``save_pretrained`` wrote to
    ``dst``. A stage does not change the tokenizer, but a re-save does change
    its files (transformers adds fields), and with them the stamp: every row
    would be tokenised again for the next stage."""
    import shutil

    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(dst) / name)


def special_ids(tokenizer) -> dict:
    """The ids a training loop needs from the tokenizer (recorded next to the
    token files, so a worker never has to load the tokenizer)."""
    return {"pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            "mask_token_id": tokenizer.mask_token_id, "all_special_ids": list(tokenizer.all_special_ids)}


TINY_BERT = "tiny-bert"


def read_vocab(vocab_file: str | Path) -> dict[str, int]:
    """A WordPiece vocab file (one token a line) -> token -> id."""
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"model.tokenizer: vocab file not found: {vocab_file}")
    vocab: dict[str, int] = {}
    for line in vocab_file.read_text(encoding="utf-8").split("\n"):
        token = line.rstrip("\r")
        if token and token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def wordpiece_tokenizer(vocab_file: str | Path, lowercase: bool = False):
    """A BERT WordPiece tokenizer from a vocab file, built offline
    (e.g. the real mBERT vocabulary: cased, so lowercase=False).

    transformers 5 ignores ``vocab_file=`` (the tokenizer silently ends up
    with only the five special tokens), so the vocabulary is passed as a dict.
    """
    from transformers import BertTokenizerFast

    vocab = read_vocab(vocab_file)
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_file}: vocabulary lacks special token(s) {missing}")
    return BertTokenizerFast(vocab=vocab, do_lower_case=lowercase,
                             strip_accents=None if lowercase else False)


def synthetic_tokenizer(bench=None):
    """Word-level tokenizer over the embedded benchmark's vocabulary."""

    bench = bench or SyntheticBenchmark.from_config()
    with tempfile.TemporaryDirectory() as tmp:
        return wordpiece_tokenizer(write_vocab(bench, Path(tmp) / "vocab.txt"), lowercase=True)


def build_tokenizer(model_cfg, data_cfg=None):
    """Resolve ``model.tokenizer``: 'synthetic', a .txt vocab, a hub id/dir, or
    null for the model's own tokenizer."""
    spec = model_cfg.tokenizer
    if spec == "synthetic":
        return synthetic_tokenizer(SyntheticBenchmark.from_config(getattr(data_cfg, "synthetic", None),
                                                                  getattr(data_cfg, "task", None)))
    if spec is not None and spec.endswith(".txt"):
        return wordpiece_tokenizer(spec, model_cfg.lowercase)
    name = resolve_e5(spec or model_cfg.name_or_path, model_cfg.cache_dir)
    if name == TINY_BERT:
        raise ValueError("model.tokenizer: tiny-bert has no tokenizer of its own; "
                         "set model.tokenizer to 'synthetic' or a vocab .txt file")
    return open_tokenizer(name)
