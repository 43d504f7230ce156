import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conlst_ray.data.hub import rows_from_hf_dataset
from conlst_ray.data.readers import (
    read_corpus,
    read_jsonl,
    read_languages,
    read_parquet,
    read_xnli_mt_tsv,
    read_xnli_tsv,
)
from conlst_ray.data.schema import ROW_SCHEMA, CorpusError
from tests.conftest import MNLI_LANGS, XNLI_LANGS
from tests.helpers import parse_label, without_labels


def label_counts(table):
    labels = table.column("label").to_pylist()
    return {k: labels.count(k) for k in (0, 1, 2)}


@pytest.mark.parametrize("lang", XNLI_LANGS)
def test_every_xnli_dev_file_reads_with_balanced_labels(shared_data, lang):
    table, report = read_xnli_tsv(shared_data / "xnli" / f"dev-{lang}.tsv")
    assert table.schema == ROW_SCHEMA
    assert table.num_rows == report.rows == 2490
    assert label_counts(table) == {0: 830, 1: 830, 2: 830}
    assert set(table.column("lang").to_pylist()) == {lang}


def test_xnli_first_row_label_ids_follow_hf_order(shared_data):
    table, _ = read_xnli_tsv(shared_data / "xnli" / "dev-en.tsv")
    first = table.slice(0, 3).to_pylist()
    # dev-en.tsv starts: neutral, contradiction, entailment
    assert [r["label"] for r in first] == [1, 2, 0]
    assert first[0]["text"] == "And he said, Mama, I'm home."


@pytest.mark.parametrize("lang", MNLI_LANGS)
def test_every_mnli_mt_file_reads_and_maps_contradictory(shared_data, lang):
    path = shared_data / "mnli" / f"multinli.train.{lang}.tsv"
    table, _ = read_xnli_mt_tsv(path)
    assert table.num_rows == 15001
    raw = [line.split("\t")[2].strip() for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    expected = {"entailment": 0, "neutral": 1, "contradictory": 2}
    assert table.column("label").to_pylist() == [expected[x] for x in raw]


def test_ids_are_unique_across_languages(shared_data):
    table, _ = read_languages(f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv", ["fr", "de", "zh"])
    ids = table.column("id").to_pylist()
    assert table.num_rows == 3 * 2490 and len(set(ids)) == len(ids)
    assert ids[0].startswith("fr-")


def corrupt_copy(shared_data, tmp_path, bad_lines: dict[int, str], name="dev-fr.tsv", folder="xnli"):
    lines = (shared_data / folder / name).read_text(encoding="utf-8").split("\n")
    for lineno, text in bad_lines.items():
        lines[lineno - 1] = text
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_missing_column_names_file_and_line(shared_data, tmp_path):
    path = corrupt_copy(shared_data, tmp_path, {17: "only a premise\tand a hypothesis"})
    with pytest.raises(CorpusError) as err:
        read_xnli_tsv(path)
    assert f"{path}:17" in str(err.value) and "expected 3" in str(err.value)


def test_unknown_label_names_file_and_line(shared_data, tmp_path):
    path = corrupt_copy(shared_data, tmp_path, {5: "A premise.\tA hypothesis.\tmaybe"})
    with pytest.raises(CorpusError) as err:
        read_xnli_tsv(path)
    assert f"{path}:5" in str(err.value) and "'maybe'" in str(err.value)


def test_mnli_unknown_label_and_empty_text_name_the_line(shared_data, tmp_path):
    path = corrupt_copy(shared_data, tmp_path, {3: "p\th\tmaybe"}, "multinli.train.de.tsv", "mnli")
    with pytest.raises(CorpusError, match=rf"{path}:3: unknown label 'maybe'"):
        read_xnli_mt_tsv(path)
    path = corrupt_copy(shared_data, tmp_path, {4: " \th\tneutral"}, "multinli.train.de.tsv", "mnli")
    with pytest.raises(CorpusError, match=rf"{path}:4: empty text"):
        read_xnli_mt_tsv(path)


def test_skip_option_counts_malformed_rows(shared_data, tmp_path):
    path = corrupt_copy(shared_data, tmp_path, {5: "p\th\tmaybe", 9: "p only", 12: "\th\tneutral"})
    table, report = read_xnli_tsv(path, on_malformed="skip")
    assert table.num_rows == 2490 - 3
    assert report.skipped == 3
    assert sum(report.reasons.values()) == 3
    summary = report.summary()
    assert "3 malformed rows skipped" in summary                 # how many
    assert "unknown label 'maybe'" in summary and "empty text x 1" in summary  # why, grouped
    assert f"first: {path}:5:" in summary                       # where


# -- encodings, BOM, over-long lines, wrong kinds of path -----------------------------------

def test_a_latin1_file_is_an_error_naming_file_line_and_byte(shared_data, tmp_path):
    path = tmp_path / "dev-fr.tsv"
    lines = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").splitlines()
    path.write_bytes(("\n".join(lines[:6]) + "\n").encode("latin-1", errors="replace"))
    bad_line = next(i for i, line in enumerate(lines[:6], 1) if line != line.encode("ascii", "ignore").decode())
    with pytest.raises(CorpusError,
                       match=rf"{path}:{bad_line}: not UTF-8 text \(byte \d+ of the line is 0x[0-9a-f]{{2}}\)"):
        read_xnli_tsv(path)
    with pytest.raises(CorpusError, match="not UTF-8"):  # not a malformed row: skip does not hide it
        read_xnli_tsv(path, on_malformed="skip")


@pytest.mark.parametrize("fmt, name", [("xnli_mt_tsv", "multinli.train.de.tsv"), ("tsv", "multinli.train.de.tsv")])
def test_a_utf8_byte_order_mark_is_dropped(shared_data, tmp_path, fmt, name):
    src = shared_data / "mnli" / name
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    spec = f"{fmt}:{path}" + ("?hypothesis=hypo" if fmt == "tsv" else "")
    with_bom, _ = read_corpus(spec, "de", max_rows=20)
    plain, _ = read_corpus(spec.replace(str(path), str(src)), "de", max_rows=20)
    assert with_bom.column("text").to_pylist() == plain.column("text").to_pylist()
    assert not with_bom.column("text")[0].as_py().startswith("\ufeff")


@pytest.mark.parametrize("fmt", ["xnli_tsv", "tsv", "jsonl"])
def test_an_over_long_line_is_a_malformed_row_read_in_pieces(tmp_path, fmt):
    long = "x" * 300_000
    rows = {"xnli_tsv": ["A cat.\tAn animal.\tentailment", f"{long}\th\tneutral", "Rain.\tWet.\tentailment"],
            "tsv": ["premise\thypothesis\tlabel", "A cat.\tAn animal.\tentailment", f"{long}\th\tneutral",
                    "Rain.\tWet.\tentailment"],
            "jsonl": [json.dumps({"premise": p, "hypothesis": "h", "label": 0}) for p in ("A cat.", long, "Rain.")]}
    path = tmp_path / f"dev-fr.{'jsonl' if fmt == 'jsonl' else 'tsv'}"
    path.write_text("\n".join(rows[fmt]) + "\n", encoding="utf-8")
    long_line = 3 if fmt == "tsv" else 2
    with pytest.raises(CorpusError, match=rf"{path}:{long_line}: line longer than data.max_line_bytes \(100000\)"):
        read_corpus(f"{fmt}:{path}", "fr", max_line_bytes=100_000)
    table, report = read_corpus(f"{fmt}:{path}", "fr", max_line_bytes=100_000, on_malformed="skip")
    assert table.column("text").to_pylist() == ["A cat.", "Rain."] and report.skipped == 1
    if fmt == "tsv":  # the csv reader's line numbers stay in step after the skipped line
        bad = tmp_path / "dev-de.tsv"
        bad.write_text("\n".join(rows[fmt] + ["only one column"]) + "\n", encoding="utf-8")
        table, report = read_corpus(f"tsv:{bad}", "de", max_line_bytes=100_000, on_malformed="skip")
        assert report.examples[1].startswith(f"{bad}:5: expected 3 columns")


def test_a_directory_given_as_a_file_says_so(tmp_path):
    for spec in (f"xnli_tsv:{tmp_path}", f"tsv:{tmp_path}", f"jsonl:{tmp_path}"):
        with pytest.raises(CorpusError, match=rf"{tmp_path}: is a directory, not a file"):
            read_corpus(spec, "fr")


def test_a_non_text_premise_names_its_type(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"premise": [7, 8], "hypothesis": ["h", "h"], "label": [0, 1]}), path)
    with pytest.raises(CorpusError, match=rf"{path}:row 1: text is a int \(7\), not text"):
        read_parquet(path)


def test_jsonl_reader(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"premise": "A man sleeps.", "hypothesis": "Someone rests.", "label": "entailment"},
            {"premise": "Il pleut.", "hypothesis": "Il fait beau.", "label": 2, "lang": "fr", "id": "x7"},
            {"premise": "Es regnet.", "hypothesis": "Niemand ist da."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    table, _ = read_jsonl(path, lang="en")
    assert table.to_pylist()[1] == {"id": "fr-corpus-x7", "lang": "fr", "text": "Il pleut.",
                                    "text_pair": "Il fait beau.", "label": 2}
    assert table.column("label").to_pylist() == [0, 2, -1]
    path.write_text(path.read_text() + '{"premise": "p"}\n')
    with pytest.raises(CorpusError, match=rf"{path}:5: no column 'text_pair' or 'hypothesis' for text_pair"):
        read_jsonl(path)
    path.write_text('{"premise": "p", "hypothesis": "h"}\n{not json\n')
    with pytest.raises(CorpusError, match=rf"{path}:2: invalid JSON"):
        read_jsonl(path)


def test_parquet_reader_round_trips_and_checks_columns(tmp_path):
    src = pa.table({"premise": ["a b", "c d"], "hypothesis": ["e", "f"], "label": [1, -1]})
    pq.write_table(src, tmp_path / "sw.parquet")
    table, _ = read_corpus(f"parquet:{tmp_path}/{{lang}}.parquet", "sw")
    assert table.column("label").to_pylist() == [1, -1]
    assert table.column("lang").to_pylist() == ["sw", "sw"]
    pq.write_table(pa.table({"premise": ["a"], "label": [0]}), tmp_path / "bad.parquet")
    with pytest.raises(CorpusError, match=r"bad.parquet: no column 'text_pair' or 'hypothesis' for text_pair"):
        read_parquet(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"premise": ["a"], "hypothesis": ["b"], "label": ["perhaps"]}), tmp_path / "lab.parquet")
    with pytest.raises(CorpusError, match=r"lab.parquet:row 1: unknown label 'perhaps'"):
        read_parquet(tmp_path / "lab.parquet")


def test_hf_column_mapping_on_local_datasets():
    import datasets

    # facebook/xnli per-language config layout: premise, hypothesis, label (ClassLabel)
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    xnli = datasets.Dataset.from_dict({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0]},
                                      features=features)
    table, _ = rows_from_hf_dataset(xnli, "fr", "facebook/xnli:fr:validation")
    assert table.column("label").to_pylist() == [2, 0]
    assert table.column("lang").to_pylist() == ["fr", "fr"]
    # nyu-mll/multi_nli layout: extra columns, pairID as id, -1 = no gold label
    mnli = datasets.Dataset.from_dict({"promptID": [1, 2], "pairID": ["31193n", "31194e"], "premise": ["a", "b"],
                                       "hypothesis": ["c", "d"], "genre": ["slate", "travel"], "label": [1, -1]})
    table, _ = rows_from_hf_dataset(mnli, "en", "nyu-mll/multi_nli::train")
    assert table.column("id").to_pylist() == ["en-nyu-mll_multi_nli::train-31193n",
                                              "en-nyu-mll_multi_nli::train-31194e"]
    assert table.column("label").to_pylist() == [1, -1]


def test_hub_spec_fails_fast_and_clearly_offline(tmp_path):
    code = ("from conlst_ray.data.readers import read_corpus\n"
            "read_corpus('hf:facebook/xnli:{lang}:validation', 'fr')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "hf:facebook/xnli:fr:validation: cannot load" in proc.stderr


def test_spec_errors_and_empty_language(tmp_path):
    with pytest.raises(CorpusError, match="format:location"):
        read_corpus("xml:/x.xml", "fr")
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(f"xnli_tsv:{tmp_path}/dev-{{lang}}.tsv", "fr")
    (tmp_path / "dev-xx.tsv").write_text("")
    with pytest.raises(CorpusError, match="language 'xx' has no rows"):
        read_languages(f"xnli_tsv:{tmp_path}/dev-{{lang}}.tsv", ["xx"])


def test_parse_label_and_without_labels(shared_data):
    assert [parse_label(x) for x in ("Entailment", "neutral", "contradictory", "2", None, -1)] == [0, 1, 2, 2, -1, -1]
    for bad in ("maybe", 3, True):
        with pytest.raises(ValueError):
            parse_label(bad)
    table, _ = read_xnli_tsv(shared_data / "xnli" / "dev-sw.tsv", max_rows=10)
    hidden = without_labels(table)
    assert hidden.column("label").to_pylist() == [-1] * 10
    assert hidden.column("text") == table.column("text")
