"""A saved stage model is a Hugging Face classifier (Auto
classes, its labels, the same logits as conlst_ray's loader), labels new
text from the command line and from Python."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conlst_ray.api import load_model
from conlst_ray.commands import predict
from conlst_ray.models.encoder import ConlstEncoder, build_model

REPO = Path(__file__).resolve().parents[1]
PAIRS = (["A man plays a guitar.", "Il pleut depuis ce matin.", "Der Hund schläft."],
         ["Someone makes music.", "Le temps est sec.", "Ein Tier ruht."])


def trained_like(tmp_path, tokenizer, pooling="cls", labels=("entailment", "neutral", "contradiction"), kind="pair"):
    """A tiny model saved as a stage saves it, with a head that is not its initialisation."""
    from conlst_ray.config import load_config

    cfg = load_config(None, [f"model.pooling={pooling}"])
    model = build_model(cfg.model, tokenizer, list(labels), kind)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
        model.classifier.bias.copy_(torch.arange(len(labels), dtype=torch.float) * 0.3)
    return model.save(tmp_path / f"model_{pooling}", tokenizer)


def ours(model_dir, tokenizer):
    model = ConlstEncoder.load(model_dir).eval()
    batch = tokenizer(*PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).numpy(), batch


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_a_saved_model_loads_with_the_auto_classes_with_its_labels_and_logits(tmp_path, mbert_tokenizer, pooling):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import conlst_ray.hf  # noqa: F401 -- registers model_type conlst

    model_dir = trained_like(tmp_path, mbert_tokenizer, pooling)
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    expected, batch = ours(model_dir, mbert_tokenizer)
    hf_batch = tok(*PAIRS, padding=True, return_tensors="pt")
    assert torch.equal(hf_batch["input_ids"], batch["input_ids"])
    with torch.no_grad():
        logits = hf(**hf_batch).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert hf.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert hf.config.label2id["contradiction"] == 2
    card = (Path(model_dir) / "README.md")
    assert not card.exists() or "base_model" in card.read_text()


def test_without_conlst_ray_transformers_refuses_or_runs_the_saved_model_file(tmp_path, mbert_tokenizer):
    """A fresh interpreter that never imports conlst_ray: plain from_pretrained
    fails loudly (never a random head); trust_remote_code=True runs the
    modeling_conlst.py saved beside the weights and gives the same logits."""
    model_dir = trained_like(tmp_path, mbert_tokenizer, "mean")
    expected, batch = ours(model_dir, mbert_tokenizer)
    np.save(tmp_path / "batch_ids.npy", batch["input_ids"].numpy())
    np.save(tmp_path / "batch_mask.npy", batch["attention_mask"].numpy())
    np.save(tmp_path / "batch_types.npy", batch["token_type_ids"].numpy())
    script = f"""
import sys, numpy as np, torch
from transformers import AutoModelForSequenceClassification
try:
    AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r})
    print("LOADED-WITHOUT-CODE")
except Exception as exc:
    print("REFUSED", type(exc).__name__)
m = AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
assert "conlst_ray" not in sys.modules
b = {{k: torch.as_tensor(np.load({str(tmp_path)!r} + f"/batch_{{k}}.npy")) for k in ("ids", "mask", "types")}}
with torch.no_grad():
    out = m(input_ids=b["ids"], attention_mask=b["mask"], token_type_ids=b["types"]).logits
np.save({str(tmp_path / "theirs.npy")!r}, out.numpy())
print(m.config.id2label)
"""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED" in done.stdout and "LOADED-WITHOUT-CODE" not in done.stdout
    assert "'entailment'" in done.stdout
    np.testing.assert_allclose(np.load(tmp_path / "theirs.npy"), expected, atol=1e-5)


def test_predict_labels_a_corpus_as_the_auto_model_does(tmp_path, mbert_tokenizer, shared_data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import conlst_ray.hf  # noqa: F401

    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls")
    out = tmp_path / "pred.parquet"
    spec = f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"
    assert predict.main([str(model_dir), "--corpus", spec, "--langs", "fr", "sw", "--max-rows", "40",
                         "--out", str(out)]) == 0
    table = pq.read_table(out).to_pylist()
    assert len(table) == 80 and {r["lang"] for r in table} == {"fr", "sw"}
    assert {"gold", "label", "label_id", "confidence", "p_entailment", "p_neutral", "p_contradiction"} <= set(table[0])
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok([r["text"] for r in table], [r["text_pair"] for r in table], padding=True, truncation=True,
                max_length=128, return_tensors="pt")
    with torch.no_grad():
        probs = hf(**batch).logits.softmax(-1).numpy()
    assert [hf.config.id2label[i] for i in probs.argmax(-1)] == [r["label"] for r in table]
    np.testing.assert_allclose([r["confidence"] for r in table], probs.max(-1), atol=1e-5)


def test_predict_writes_csv_and_jsonl_and_refuses_bad_arguments_in_one_line(tmp_path, mbert_tokenizer, capsys):
    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls", labels=("negative", "positive"), kind="single")
    corpus = tmp_path / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("great phone", "broke after a day")))
    for suffix in ("csv", "jsonl"):
        out = tmp_path / f"labels.{suffix}"
        assert predict.main([str(model_dir), "--corpus", f"jsonl:{corpus}", "--out", str(out)]) == 0
        text = out.read_text()
        assert "p_negative" in text and "broke after a day" in text and "gold" not in text
    capsys.readouterr()
    for args, expected in (([str(model_dir), "--out", str(tmp_path / "x.txt")], "--out"),
                           ([str(tmp_path), "--out", str(tmp_path / "x.csv")], "MODEL_DIR"),
                           ([str(model_dir), "--out", str(tmp_path / "x.csv"), "--batch-size", "0"], "--batch-size")):
        assert predict.main(args[:1] + ["--corpus", f"jsonl:{corpus}"] + args[1:]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()


def test_predict_never_writes_over_its_input_or_into_a_folder_and_keeps_the_umask(tmp_path, mbert_tokenizer, capsys):
    """--out equal to the corpus being labelled, or naming a folder: one line
    before the model is loaded, the corpus intact. A written file has the
    mode the umask gives any new file (0644 under 022), not 0600."""
    import os
    import stat

    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls", labels=("negative", "positive"), kind="single")
    corpus = tmp_path / "reviews.jsonl"
    text = "".join(json.dumps({"text": t}) + "\n" for t in ("great phone", "broke after a day"))
    corpus.write_text(text)
    (tmp_path / "folder.csv").mkdir()
    for out, expected in ((corpus, "is the corpus being labelled"), (tmp_path / "folder.csv", "is a folder")):
        assert predict.main([str(model_dir), "--corpus", f"jsonl:{corpus}", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and expected in err and "Traceback" not in err
    assert corpus.read_text() == text
    previous = os.umask(0o022)
    try:
        assert predict.main([str(model_dir), "--corpus", f"jsonl:{corpus}", "--out", str(tmp_path / "l.csv")]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "l.csv").stat().st_mode) == 0o644


def test_the_python_api_predicts_texts_with_label_names(tmp_path, mbert_tokenizer):
    model_dir = trained_like(tmp_path, mbert_tokenizer, "mean")
    model = load_model(model_dir, device="cpu")
    out = model.predict(*PAIRS)
    expected, _ = ours(model_dir, mbert_tokenizer)
    assert [r["label"] for r in out] == [model.labels[i] for i in expected.argmax(-1)]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in out)
    with pytest.raises(ValueError, match="texts and text_pairs"):
        model.predict(PAIRS[0])


def test_the_python_api_answers_as_the_command_line_does(tmp_path, mbert_tokenizer):
    """load_model refuses what predict refuses, in one line naming the folder,
    before any hub lookup; predict reads one string as one row, gives an empty
    result for empty input and refuses a batch size below 1."""
    import time

    from transformers import BertConfig, BertModel

    from conlst_ray.models.encoder import ModelError

    BertModel(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "plain")
    for folder, said in ((tmp_path / "plain", "not a model conlst_ray trained"), (tmp_path / "missing", "no such"),
                         (None, "model_dir: give the folder")):
        start = time.time()
        with pytest.raises(ModelError, match=said):
            load_model(folder)
        assert time.time() - start < 5                               # no hub retries
    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls", labels=("negative", "positive"), kind="single")
    with pytest.raises(ModelError, match="max_length 100000: .* positions"):
        load_model(model_dir, max_length=100_000)
    model = load_model(model_dir, device="cpu")
    assert len(model.predict("hello")) == 1                           # a string is one row, not five
    assert model.predict([]) == []
    with pytest.raises(ValueError, match="batch_size -1"):
        model.predict(["hello"], batch_size=-1)


def test_a_model_folder_with_cut_weights_or_no_tokenizer_is_one_line_before_loading(tmp_path, mbert_tokenizer,
                                                                                      capsys):
    """A copy cut short (a full disk, an interrupted transfer) and a folder
    copied without its tokenizer: predict says so in one line naming the
    folder, and load_model raises the same ModelError."""
    import shutil

    from conlst_ray.models.encoder import WEIGHTS_FILE, ModelError

    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls", labels=("negative", "positive"), kind="single")
    corpus = tmp_path / "reviews.jsonl"
    corpus.write_text(json.dumps({"text": "great phone"}) + "\n")
    cut, bare = tmp_path / "cut", tmp_path / "bare"
    shutil.copytree(model_dir, cut)
    weights = (cut / WEIGHTS_FILE).read_bytes()
    (cut / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("tokenizer*", "vocab.txt", "special_tokens*"))
    for folder, said in ((cut, "are cut short"), (bare, "holds no tokenizer files")):
        capsys.readouterr()
        assert predict.main([str(folder), "--corpus", f"jsonl:{corpus}", "--out", str(tmp_path / "x.csv")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {folder}: ") and said in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        with pytest.raises(ModelError, match=said):
            load_model(folder)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_loading_a_saved_model_prints_no_transformers_warning(tmp_path, mbert_tokenizer):
    """Its tokenizer is opened with the encoder's own config: transformers
    neither warns of a ``conlst`` model read as another type nor asks about
    the folder's model code."""
    import subprocess
    import sys

    model_dir = trained_like(tmp_path, mbert_tokenizer, "cls")
    # a fresh process: transformers says each warning once per process
    proc = subprocess.run([sys.executable, "-c", "import sys; from conlst_ray import load_model; "
                           "print(type(load_model(sys.argv[1], device='cpu').tokenizer).__name__)", str(model_dir)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "instantiate a model of type" not in proc.stderr and "custom code" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "BertTokenizer"


def test_a_failed_run_raises_with_its_reason(tmp_path):
    from conlst_ray.api import RunError, run

    with pytest.raises(RunError, match="conl.gamma") as failed:
        run(overrides={"conl.gamma": 1.5, "output_dir": str(tmp_path)})
    assert "conl.gamma" in failed.value.reason


def test_a_prior_corrected_model_applies_its_correction_in_predict_the_api_and_the_cards_auto_line(
        tmp_path, mbert_tokenizer, shared_data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import conlst_ray.hf  # noqa: F401
    from conlst_ray.models.corrected import save_corrected

    base = trained_like(tmp_path, mbert_tokenizer, "cls")
    plain = load_model(str(base)).predict_proba(PAIRS[0], PAIRS[1])
    # the tiny model is sure of one class (which one depends on the random head): a bias that moves every
    # row to another class
    bias = {"fr": np.roll([30.0, -10.0, -20.0], int(plain[0].argmax()) + 1).tolist()}
    model_dir = save_corrected(base, bias, tmp_path / "corrected" / "model", "a test's correction")
    card = (model_dir / "README.md").read_text()
    line = "logits = model(**batch).logits + torch.tensor(model.config.language_bias[lang])"
    assert line in card and "| fr | " + " | ".join(f"{x:+.3f}" for x in bias["fr"]) + " |" in card
    assert os.path.samefile(base / "model.safetensors", model_dir / "model.safetensors")  # linked, not copied
    out = tmp_path / "pred.parquet"
    spec = f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"
    assert predict.main([str(model_dir), "--corpus", spec, "--langs", "fr", "sw", "--max-rows", "30",
                         "--out", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    for lang in ("fr", "sw"):  # sw has no correction: the Auto class's plain logits
        mine = [r for r in rows if r["lang"] == lang]
        batch = tok([r["text"] for r in mine], [r["text_pair"] for r in mine], padding=True, truncation=True,
                    max_length=128, return_tensors="pt")
        with torch.no_grad():
            logits = hf(**batch).logits
            if lang in hf.config.language_bias:
                logits = logits + torch.tensor(hf.config.language_bias[lang])  # the card's one line
            probs = logits.softmax(-1).numpy()
        got = np.array([[r["p_entailment"], r["p_neutral"], r["p_contradiction"]] for r in mine])
        np.testing.assert_allclose(got, probs, atol=1e-5)
    # the correction moves French predictions: the same rows through the base model differ
    api = load_model(str(model_dir))
    np.testing.assert_allclose(api.predict_proba(PAIRS[0], PAIRS[1], lang="sw"), plain, atol=1e-6)
    fr = api.predict_proba(PAIRS[0], PAIRS[1], lang="fr")
    assert (fr.argmax(1) != plain.argmax(1)).all()
    np.testing.assert_allclose(np.log(fr) - np.log(fr).mean(1, keepdims=True),
                               np.log(plain) - np.log(plain).mean(1, keepdims=True)
                               + np.array(bias["fr"]) - np.mean(bias["fr"]), atol=1e-4)
    with pytest.warns(UserWarning, match="pass lang="):
        api.predict(PAIRS[0], PAIRS[1])
