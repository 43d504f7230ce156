import pytest
import torch

from conlst_ray.config import ModelConfig
from conlst_ray.models.encoder import ConlstEncoder, build_model, build_tokenizer, read_vocab


@pytest.fixture()
def tiny(synthetic_tokenizer):
    torch.manual_seed(0)
    return build_model(ModelConfig(), synthetic_tokenizer)


def batch(tokenizer):
    return tokenizer(["kala mebu dofi", "x"], ["dofi", "y z w v"], padding=True, return_tensors="pt")


def test_heads_and_shapes(tiny, synthetic_tokenizer):
    enc = batch(synthetic_tokenizer)
    h = tiny.embed(**enc)
    assert h.shape == (2, 64)
    assert tiny.classify(h).shape == (2, 3) and tiny.contrast(h).shape == (2, 128)
    tiny.eval()
    assert torch.allclose(tiny(**enc), tiny.classify(tiny.embed(**enc)))


def test_mean_pooling_ignores_padding(synthetic_tokenizer):
    torch.manual_seed(0)
    model = build_model(ModelConfig(pooling="mean"), synthetic_tokenizer).eval()
    enc = synthetic_tokenizer(["kala mebu"], ["dofi"], return_tensors="pt")
    padded = {k: torch.cat([v, torch.zeros(1, 4, dtype=v.dtype)], 1) for k, v in enc.items()}
    assert torch.allclose(model.embed(**enc), model.embed(**padded), atol=1e-5)
    cls_model = build_model(ModelConfig(pooling="cls"), synthetic_tokenizer)
    cls_model.load_state_dict(model.state_dict())
    assert not torch.allclose(cls_model.eval().embed(**enc), model.embed(**enc))


def test_dropout_makes_two_views_and_eval_is_deterministic(tiny, synthetic_tokenizer):
    enc = batch(synthetic_tokenizer)
    tiny.train()
    assert not torch.allclose(tiny.embed(**enc), tiny.embed(**enc))  # Eq. 6's positive pair
    tiny.eval()
    assert torch.equal(tiny.embed(**enc), tiny.embed(**enc))


def test_save_load_is_a_hugging_face_classifier_directory(tiny, synthetic_tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import conlst_ray.hf  # noqa: F401 -- registers model_type conlst

    tiny.save(tmp_path / "m", synthetic_tokenizer)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = ConlstEncoder.load(tmp_path / "m").eval()
    enc = batch(synthetic_tokenizer)
    assert torch.allclose(tiny.eval()(**enc), again(**enc))
    assert torch.allclose(tiny.contrast(tiny.embed(**enc)), again.contrast(again.embed(**enc)))
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert torch.allclose(hf.encoder(**enc).last_hidden_state[:, 0], tiny.embed(**enc), atol=1e-6)
    assert torch.allclose(hf(**enc).logits, tiny(**enc), atol=1e-6)
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok("kala mebu")["input_ids"] == synthetic_tokenizer("kala mebu")["input_ids"]


def test_plain_hf_encoder_directory_gets_fresh_heads(tiny, tmp_path):
    tiny.encoder.save_pretrained(tmp_path / "enc")
    model = ConlstEncoder.load(tmp_path / "enc", pooling="mean", num_labels=3, contrastive_dim=16)
    assert model.pooling == "mean" and model.contrast(torch.zeros(1, 64)).shape == (1, 16)


def test_real_mbert_vocabulary_tokenizer(mbert_tokenizer, shared_data):
    vocab = read_vocab(shared_data / "vocab" / "bert-base-multilingual-cased-vocab.txt")
    assert len(mbert_tokenizer) == len(vocab) == 119547
    assert mbert_tokenizer.convert_tokens_to_ids(["[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [100, 101, 102, 103]
    assert mbert_tokenizer.tokenize("Das ist schön") == ["Das", "ist", "s", "##ch", "##ön"]  # cased
    assert mbert_tokenizer.unk_token_id not in mbert_tokenizer("Привет, 你好")["input_ids"]


def test_tokenizer_specs(shared_data):
    cfg = ModelConfig(tokenizer=str(shared_data / "vocab" / "bert-base-multilingual-cased-vocab.txt"))
    assert len(build_tokenizer(cfg)) == 119547
    with pytest.raises(ValueError, match="tiny-bert has no tokenizer"):
        build_tokenizer(ModelConfig(tokenizer=None))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_tokenizer(ModelConfig(tokenizer="/nowhere/missing.txt"))


def test_hf_sequence_classification_checkpoint_keeps_its_head(synthetic_tokenizer, tmp_path):
    """model.source_checkpoint may be any fine-tuned BERT classifier (CoNLST-RS / -MT)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(synthetic_tokenizer), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, num_labels=3)
    hf = BertForSequenceClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "clf")
    model = ConlstEncoder.load(tmp_path / "clf").eval()
    assert model.pooling == "pooler"
    enc = batch(synthetic_tokenizer)
    assert torch.allclose(model(**enc), hf(**enc).logits, atol=1e-5)


def test_source_checkpoint_replaces_the_source_stage(tmp_path):
    from conlst_ray.config import load_config
    from conlst_ray.pipeline.rundir import RunDir
    from conlst_ray.pipeline.stages import stage_source

    cfg = load_config(None, [f"output_dir={tmp_path}", "run_name=r", f"model.source_checkpoint={tmp_path}/ckpt"])
    assert stage_source(cfg, RunDir.create(cfg)) == f"{tmp_path}/ckpt"
    assert not (tmp_path / "r" / "source").exists()
