"""Freezing options really freeze; the evaluate command and the
column-mapped delimited reader on real XNLI files, malformed rows included."""

import csv

import pytest
import torch

from conlst_ray.config import ModelConfig, load_config
from conlst_ray.data.readers import read_corpus
from conlst_ray.data.schema import CorpusError
from conlst_ray.models.encoder import apply_freezing, build_model


def test_freeze_options_leave_frozen_parameters_unchanged_after_a_step(synthetic_tokenizer):
    cfg = ModelConfig(freeze_embeddings=True, freeze_layers=1)
    torch.manual_seed(0)
    model = build_model(cfg, synthetic_tokenizer)
    counts = apply_freezing(model, cfg)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert "encoder.embeddings.word_embeddings.weight" in frozen
    assert any(n.startswith("encoder.encoder.layer.0.") for n in frozen)
    assert not any(n.startswith("encoder.encoder.layer.1.") for n in frozen)
    assert counts["params_frozen"] == sum(p.numel() for p in frozen.values())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    from conlst_ray.training.optim import make_optimizer

    opt = make_optimizer(model, 1e-2)
    ids = torch.randint(5, len(synthetic_tokenizer), (4, 9))
    model(ids, torch.ones_like(ids)).sum().backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    with pytest.raises(ValueError, match="model.freeze_layers"):
        apply_freezing(build_model(ModelConfig(freeze_layers=5), synthetic_tokenizer), ModelConfig(freeze_layers=5))


def write_mapped_csv(shared_data, path, rows=30, bad=None):
    """Real XNLI fr rows in another layout: comma-separated, quoted, other
    column names and order, an extra column."""
    lines = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").splitlines()[:rows]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pair_id", "gold_label", "sentence2", "sentence1", "genre"])
        for i, line in enumerate(lines):
            p, h, label = line.split("\t")
            w.writerow([f"p{i}", bad if bad and i == 3 else label, h, p, "fiction"])
    return f"csv:{path}?premise=sentence1&hypothesis=sentence2&label=gold_label"


def test_column_mapped_reader_gives_the_xnli_readers_rows(shared_data, tmp_path):
    spec = write_mapped_csv(shared_data, tmp_path / "fr.csv")
    mapped, _ = read_corpus(spec, "fr")
    plain, _ = read_corpus(f"xnli_tsv:{shared_data}/xnli/dev-fr.tsv", "fr", max_rows=30)
    for col in ("text", "text_pair", "label", "lang"):
        assert mapped.column(col).to_pylist() == plain.column(col).to_pylist()
    assert mapped.num_rows == 30


def test_column_mapped_reader_errors_name_file_and_line(shared_data, tmp_path):
    spec = write_mapped_csv(shared_data, tmp_path / "bad.csv", bad="maybe")
    with pytest.raises(CorpusError, match=r"bad\.csv:5: unknown label 'maybe'"):
        read_corpus(spec, "fr")
    with pytest.raises(CorpusError, match=r"no column 'premise_text' for text"):
        read_corpus(spec.replace("sentence1", "premise_text"), "fr")
    with pytest.raises(CorpusError, match="unknown option 'colour'"):
        read_corpus(spec + "&colour=red", "fr")
    (tmp_path / "short.csv").write_text("sentence1,sentence2,gold_label\na,b,neutral\nonly,two\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"short\.csv:3: expected 3 columns, found 2"):
        read_corpus(f"csv:{tmp_path}/short.csv?premise=sentence1&hypothesis=sentence2&label=gold_label", "fr")


def test_evaluate_command_scores_saved_models_per_language(shared_data, tmp_path, mbert_tokenizer, capsys):
    from conlst_ray.commands.evaluate import main
    from conlst_ray.models.encoder import ConlstEncoder, tiny_bert

    cfg = load_config(None, [])
    torch.manual_seed(0)
    model_dir = ConlstEncoder(tiny_bert(len(mbert_tokenizer), cfg.model.tiny)).save(tmp_path / "run" / "ssl" / "model",
                                                                               mbert_tokenizer)
    xnli = f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"
    rc = main([str(model_dir), f"base={model_dir}", "--corpus", xnli, "--langs", "en", "fr", "zh",
               "--max-rows", "40", "--out", str(tmp_path / "scores")])
    assert rc == 0
    with open(tmp_path / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["ssl", "base"] and list(rows[0]) == ["model", "en", "fr", "zh", "avg"]
    assert {**rows[0], "model": "base"} == rows[1] and 0 <= float(rows[0]["fr"]) <= 100
    assert "| ssl |" in capsys.readouterr().out
    bad = write_mapped_csv(shared_data, tmp_path / "bad.csv", bad="maybe")
    assert main([str(model_dir), "--corpus", bad, "--langs", "fr"]) == 2
    assert "bad.csv:5: unknown label 'maybe'" in capsys.readouterr().err
