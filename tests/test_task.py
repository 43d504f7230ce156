"""Tasks other than NLI: the label set, column mapping in every reader
(checked on the real XNLI and MultiNLI files), the embedded benchmark's
single-text and C-class variants."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conlst_ray.config import ConfigError, load_config
from conlst_ray.data.hub import rows_from_hf_dataset
from conlst_ray.data.readers import read_corpus, read_languages
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.synthetic import TARGET_LANGS, SyntheticBenchmark
from conlst_ray.data.task import NLI, Task
from tests.helpers import cue_visibility

STARS = Task("single", ("1", "2", "3", "4", "5"))
PAWS = Task("pair", ("different", "paraphrase"))
LANGS = ["fr", "zh", "ur"]


def test_label_ids_follow_the_order_of_the_names():
    assert [NLI.label_id(v) for v in ("Entailment", "neutral", "contradictory", 2, "2", None, "", -1)] == \
        [0, 1, 2, 2, 2, -1, -1, -1]
    assert [PAWS.label_id(v) for v in ("paraphrase", "DIFFERENT", 0, 1, 1.0)] == [1, 0, 0, 1, 1]
    # numeric names are matched by name only: 1 star is id 0, and 0 is no label at all
    assert [STARS.label_id(v) for v in (1, "5", 3.0)] == [0, 4, 2]
    for bad in (0, 6, "excellent", True):
        with pytest.raises(ValueError, match="unknown label"):
            STARS.label_id(bad)
    with pytest.raises(ValueError, match=r"unknown label id 2 \(expected 0-1 or -1\)"):
        PAWS.label_id(2)


def test_task_config_is_checked_with_its_key(tmp_path):
    cfg = load_config(None, ["data.task.kind=single", "data.task.labels=[neg, pos]"])
    assert Task.of(cfg.data.task) == Task("single", ("neg", "pos"), {}, {})
    assert Task.of(load_config().data.task) == NLI        # the default is the paper's NLI task
    for override, message in [("data.task.labels=[only]", "at least two"),
                              ("data.task.labels=[a, A]", "given twice"),
                              ("data.task.kind=triple", "choose one of"),
                              ("data.task.columns={premise: x}", "fields are"),
                              ("data.task.label_aliases={no: maybe}", "not a label name")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="model.num_labels' is gone.*data.task.labels"):
        load_config(None, ["model.num_labels=3"])


def xnli(shared_data):
    return f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"


def test_xnli_through_the_generic_mapping_equals_the_xnli_reader(shared_data):
    plain, _ = read_languages(xnli(shared_data), LANGS)
    mapped, _ = read_languages(f"tsv:{shared_data}/xnli/dev-{{lang}}.tsv?header=none&text=0&text_pair=1&label=2",
                               LANGS, task=Task("pair", ("entailment", "neutral", "contradiction")))
    assert mapped.num_rows == plain.num_rows == 3 * 2490
    assert mapped.to_pylist() == plain.to_pylist()        # ids, texts and labels, row for row
    # MultiNLI's header names its columns: mapped by name, the same pairs
    mt, _ = read_corpus(f"xnli_mt_tsv:{shared_data}/mnli/multinli.train.fr.tsv", "fr", max_rows=500)
    by_name, _ = read_corpus(f"tsv:{shared_data}/mnli/multinli.train.fr.tsv?text=premise&text_pair=hypo", "fr",
                             max_rows=500)
    for col in ("text", "text_pair", "label", "lang"):
        assert by_name.column(col).to_pylist() == mt.column(col).to_pylist()


def test_every_format_maps_columns_to_the_same_rows(shared_data, tmp_path):
    """Real XNLI rows written as JSONL, Parquet, CSV and a hub Dataset under
    other column names, with label names, read back as a 2-class pair task."""
    import datasets

    plain, _ = read_corpus(xnli(shared_data), "fr", max_rows=200)
    rows = [r for r in plain.to_pylist() if r["label"] != 1]             # a 2-class task: no 'neutral'
    names = {0: "paraphrase", 2: "different"}
    task = Task("pair", ("different", "paraphrase"))
    wanted = [(r["text"], r["text_pair"], 1 if r["label"] == 0 else 0) for r in rows]
    recs = [{"s1": r["text"], "s2": r["text_pair"], "gold": names[r["label"]], "key": f"k{i}"}
            for i, r in enumerate(rows)]
    (tmp_path / "fr.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "fr.parquet")
    import csv
    with open(tmp_path / "fr.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["key", "s2", "s1", "gold"])
        writer.writeheader()
        writer.writerows(recs)
    mapping = "?text=s1&text_pair=s2&label=gold&id=key"
    tables = [read_corpus(f"{fmt}:{tmp_path}/fr.{fmt}{mapping}", "fr", task=task)[0]
              for fmt in ("jsonl", "parquet", "csv")]
    hub = datasets.Dataset.from_list(recs)
    tables.append(rows_from_hf_dataset(hub, "fr", "local/pawsish:fr:test", task=task,
                                       given={"text": "s1", "text_pair": "s2", "label": "gold", "id": "key"})[0])
    for table in tables:
        assert list(zip(*(table.column(c).to_pylist() for c in ("text", "text_pair", "label")))) == wanted
        assert table.column("id").to_pylist()[0].endswith("-k0")
    # the mapping can also come once from the task, for every corpus
    via_task = Task("pair", ("different", "paraphrase"), columns={"text": "s1", "text_pair": "s2", "label": "gold"})
    assert read_corpus(f"jsonl:{tmp_path}/fr.jsonl", "fr", task=via_task)[0].column("label").to_pylist() == \
        [w[2] for w in wanted]


def test_single_text_rows_and_mapping_errors_name_file_and_line(shared_data, tmp_path):
    premises, _ = read_corpus(f"tsv:{shared_data}/xnli/dev-fr.tsv?header=none&text=0&label=2", "fr",
                              task=Task("single", ("entailment", "neutral", "contradiction")))
    plain, _ = read_corpus(xnli(shared_data), "fr")
    assert premises.column("text").to_pylist() == plain.column("text").to_pylist()
    assert premises.column("text_pair").null_count == premises.num_rows   # a single-text corpus has no pairs
    with pytest.raises(CorpusError, match=r"dev-fr\.tsv:1: unknown label 'neutral'"):
        read_corpus(f"tsv:{shared_data}/xnli/dev-fr.tsv?header=none&text=0&text_pair=1&label=2", "fr", task=PAWS)
    with pytest.raises(CorpusError, match="text_pair='1' is mapped but the task reads single texts"):
        read_corpus(f"tsv:{shared_data}/xnli/dev-fr.tsv?header=none&text=0&text_pair=1", "fr", task=STARS)
    with pytest.raises(CorpusError, match="xnli_tsv holds text pairs but the task reads single texts"):
        read_corpus(xnli(shared_data), "fr", task=STARS)
    (tmp_path / "r.csv").write_text("body,stars\nGreat,5\nBad,0\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"r\.csv:3: unknown label '0'"):
        read_corpus(f"csv:{tmp_path}/r.csv?text=body&label=stars", "en", task=STARS)
    with pytest.raises(CorpusError, match=r"r\.csv:1: no column 'review' for text; has \['body', 'stars'\]"):
        read_corpus(f"csv:{tmp_path}/r.csv?text=review&label=stars", "en", task=STARS)


def test_hub_class_labels_are_read_by_name():
    """A hub data set that orders its classes otherwise lands on the task's ids."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg"])})
    ds = datasets.Dataset.from_dict({"sentence": ["good", "awful"], "label": [0, 1]}, features=features)
    table, _ = rows_from_hf_dataset(ds, "en", "x:en:test", task=Task("single", ("neg", "pos")),
                                    given={"text": "sentence"})
    assert table.column("label").to_pylist() == [1, 0]


@pytest.mark.parametrize("task", [STARS, PAWS])
def test_the_embedded_benchmark_takes_any_task(task):
    bench = SyntheticBenchmark.from_config(None, task)
    dev = bench.table("far", "dev")
    counts = np.bincount(dev.column("label").to_numpy(), minlength=task.num_classes)
    assert len(counts) == task.num_classes and counts.min() == counts.max()      # balanced
    assert (dev.column("text_pair").null_count == 0) == task.is_pair
    known = [cue_visibility(bench, lang)["cue_forms_known"] for lang in TARGET_LANGS]
    assert known == sorted(known, reverse=True) and known[0] - known[-1] >= 0.3   # graded by distance
    # the NLI benchmark is unchanged by the others: same seed, different corpora
    assert dev.column("text").to_pylist()[:5] != SyntheticBenchmark.from_config().table("far", "dev") \
        .column("text").to_pylist()[:5]


def test_the_hub_configs_read_rows_shaped_like_their_data_sets():
    """PAWS-X and MARC as the hub serves them (columns and label types from
    their dataset cards), read through the shipped configs' task: the hub is
    not reachable here, the mapping is."""
    import datasets

    root = Path(__file__).resolve().parents[1] / "tune_configs"
    paws = Task.of(load_config(root / "pawsx_xlmr.yaml").data.task)
    features = datasets.Features({"id": datasets.Value("int32"), "sentence1": datasets.Value("string"),
                                  "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["0", "1"])})
    ds = datasets.Dataset.from_dict({"id": [1, 2, 3], "sentence1": ["a b", "c d", "e f"],
                                     "sentence2": ["b a", "d e", "f e"], "label": [1, 0, -1]}, features=features)
    table, _ = rows_from_hf_dataset(ds, "de", "google-research-datasets/paws-x:de:test", task=paws)
    assert table.column("label").to_pylist() == [1, 0, -1] and table.column("text_pair").to_pylist()[0] == "b a"
    assert paws.labels[1] == "paraphrase"
    marc = Task.of(load_config(root / "marc_xlmr.yaml").data.task)
    ds = datasets.Dataset.from_dict({"id": ["de_0", "de_1"], "text": ["Schlecht.", "Super!"], "label": [0, 4],
                                     "label_text": ["0", "4"]})
    table, _ = rows_from_hf_dataset(ds, "de", "mteb/amazon_reviews_multi:de:test", task=marc)
    assert [marc.labels[i] for i in table.column("label").to_pylist()] == ["1_star", "5_stars"]
    assert table.column("text_pair").null_count == 2


def test_a_hub_spec_carries_its_column_mapping(monkeypatch):
    """hf:DATASET:CONFIG:SPLIT?MAP: the loader gets the data set, config and
    split, the mapping reaches the rows (the hub itself is not reachable here)."""
    import datasets

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"review_body": ["Gut.", "Schlecht."], "stars": [5, 1]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    table, _ = read_corpus("hf:some/reviews:{lang}:test?text=review_body&label=stars", "de", task=STARS)
    assert calls == [("some/reviews", "de", "test")]
    assert table.column("text").to_pylist() == ["Gut.", "Schlecht."] and table.column("label").to_pylist() == [4, 0]
    with pytest.raises(CorpusError, match="unknown option 'txt'"):
        read_corpus("hf:some/reviews:de:test?txt=review_body", "de", task=STARS)
