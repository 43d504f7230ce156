"""Tokenise once: token files (Arrow, memory-mapped), the Ray job that makes
them, and training workers that never tokenise a corpus."""

import json

import numpy as np
import pyarrow as pa
import pytest

from conlst_ray.data.token_files import AlignedRows, Ragged, TokenRows, open_token_rows, write_token_file
from conlst_ray.models.tokenizers import tokenizer_stamp


def token_table(rows, start=0, lang="xx"):
    n = len(rows)
    return pa.table({"id": [f"r{start + i}" for i in range(n)], "lang": [lang] * n,
                     "pos": pa.array(range(n), pa.int64()), "label": pa.array([i % 3 for i in range(n)], pa.int64()),
                     "input_ids": pa.array(rows, pa.list_(pa.int32()))})


def test_ragged_rows_over_several_mapped_files_are_the_written_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(0, 1000, rng.integers(1, 20))) for _ in range(250)]
    for i, start in enumerate(range(0, 250, 100)):  # three files: 100, 100, 50 rows
        write_token_file(token_table(rows[start:start + 100], start), tmp_path / "lang=xx" / f"shard-{i:05d}.arrow")
    (tmp_path / "_tokenizer.json").write_text('{"stamp": "abc"}')
    data = open_token_rows(tmp_path, ["xx"], expect_stamp="abc")
    assert len(data) == 250 and isinstance(data.input_ids, Ragged)
    assert all(data.input_ids[i].tolist() == rows[i] for i in range(250))
    assert data.input_ids[-1].tolist() == rows[-1]
    assert data.lengths().tolist() == [len(r) for r in rows]
    assert [r.tolist() for r in data.input_ids] == rows
    assert data.labels.tolist() == [i % 3 for i in range(100)] * 2 + [i % 3 for i in range(50)]
    assert data.ids.to_pylist()[:2] == ["r0", "r1"] and data.langs.dtype.kind == "U"
    # the values are a view of the mapped file, not a copy in the worker's heap
    assert not data.input_ids[5].flags.owndata


def test_token_ids_of_another_tokenizer_are_refused(tmp_path):
    write_token_file(token_table([[1, 2]]), tmp_path / "lang=xx" / "shard-00000.arrow")
    (tmp_path / "_tokenizer.json").write_text('{"stamp": "abc", "tokenizer": "mbert"}')
    with pytest.raises(ValueError, match="tokenise the corpus again"):
        open_token_rows(tmp_path, ["xx"], expect_stamp="other")
    with pytest.raises(FileNotFoundError, match="'yy'"):
        open_token_rows(tmp_path, ["yy"])


def test_aligned_rows_take_the_translation_or_keep_the_row():
    target = TokenRows([token_table([[1], [2], [3]])])
    translated = TokenRows([token_table([[30], [10]])])
    aligned = AlignedRows(translated, target, np.array([1, -1, 0]))
    assert [aligned.input_ids[i].tolist() for i in range(3)] == [[10], [2], [30]]
    assert aligned.covered.tolist() == [True, False, True]


def test_tokenizer_stamp_follows_the_tokenizer_files_and_the_length(tmp_path, mbert_tokenizer):
    a, b = tmp_path / "a", tmp_path / "b"
    mbert_tokenizer.save_pretrained(a)
    mbert_tokenizer.save_pretrained(b)
    assert tokenizer_stamp(a, 128) == tokenizer_stamp(b, 128) != tokenizer_stamp(a, 64)
    spec = json.loads((b / "tokenizer.json").read_text())
    spec["model"]["vocab"]["zzzextra"] = len(spec["model"]["vocab"])   # one more word piece
    (b / "tokenizer.json").write_text(json.dumps(spec))
    assert tokenizer_stamp(b, 128) != tokenizer_stamp(a, 128)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        tokenizer_stamp(tmp_path, 128)                          # a folder without a tokenizer


@pytest.mark.slow
def test_the_job_tokenises_real_xnli_once_like_the_tokenizer(tmp_path, shared_data, mbert_tokenizer, ray_session,
                                                             tokenised_log):
    """Real XNLI dev text, the real mBERT vocabulary: the token files hold
    exactly what the tokenizer gives; a rerun tokenises nothing, a rebuilt
    language again, another tokenizer writes elsewhere."""
    from conlst_ray.config import load_config
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.tokens import tokenize_corpus
    from conlst_ray.training.batches import encode_table

    cfg = load_config(None, [f"data.target_train=xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv", "data.max_rows=300",
                             "data.shard_rows=128"])
    tok_dir = tmp_path / "tok"
    mbert_tokenizer.save_pretrained(tok_dir)
    corpus = tmp_path / "corpus"
    manifests = ingest_corpora(cfg.data.target_train, ["fr", "zh"], corpus, cfg.data)
    made_from = {lang: m["fingerprint"] for lang, m in manifests.items()}

    def job(**kw):  # as the pipeline calls it: the shards are tokenised by Ray tasks, which log them
        return tokenize_corpus(corpus, ["fr", "zh"], str(tok_dir), 64, made_from, **kw)

    out = job()
    data = open_token_rows(out, ["fr", "zh"], expect_stamp=tokenizer_stamp(tok_dir, 64))
    from conlst_ray.data.readers import read_languages

    table, _ = read_languages(cfg.data.target_train, ["fr", "zh"], max_rows=300)
    direct = encode_table(mbert_tokenizer, table, 64)
    assert len(data) == 600 and data.ids.to_pylist() == direct.ids
    assert all(data.input_ids[i].tolist() == direct.input_ids[i] for i in range(600))
    assert all(data.token_type_ids[i].tolist() == direct.token_type_ids[i] for i in range(0, 600, 7))
    assert data.meta["pad_token_id"] == mbert_tokenizer.pad_token_id

    def counted() -> int:  # rows tokenised from this test's corpus (the log is the session's)
        lines = tokenised_log.read_text().splitlines() if tokenised_log.is_file() else []
        return sum(int(line.split()[1]) for line in lines if line.split()[2].startswith(str(corpus)))

    assert counted() == 600                                   # every row once
    assert job() == out and counted() == 600                  # a rerun tokenises nothing
    made_from["zh"] = {"rebuilt": True}                       # zh's rows changed: zh again, fr not
    job()
    assert counted() == 900
    assert tokenize_corpus(corpus, ["fr"], str(tok_dir), 32, made_from) != out  # other length


def test_batches_pad_every_row_to_the_longest_with_its_own_tokens():
    """Dynamic padding, vectorised: each row keeps its tokens, in
    order, then padding; the mask marks exactly the tokens; the inference
    actor's gather over an Arrow list column gives the same ids."""
    from conlst_ray.ray_jobs.pseudo_label import pad_list_column
    from conlst_ray.training.batches import collate

    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 1000, n).astype(np.int32) for n in (7, 1, 30, 12, 30, 3)]
    types = [np.arange(len(r)) % 2 for r in rows]
    batch = collate(rows, types, pad_id=0)
    assert batch["input_ids"].shape == (6, 30) and batch["input_ids"].dtype.is_floating_point is False
    for i, row in enumerate(rows):
        assert batch["input_ids"][i, :len(row)].tolist() == row.tolist()
        assert (batch["input_ids"][i, len(row):] == 0).all()
        assert batch["attention_mask"][i].tolist() == [1] * len(row) + [0] * (30 - len(row))
        assert batch["token_type_ids"][i, :len(row)].tolist() == types[i].tolist()
    column = pa.array([r.tolist() for r in rows], pa.list_(pa.int32()))
    order = np.array([2, 0, 5])
    gathered = pad_list_column(column, order, pad=0)
    assert gathered.tolist() == collate([rows[i] for i in order], None, 0)["input_ids"].tolist()
