import numpy as np
import pytest

from conlst_ray.config import SyntheticConfig
from conlst_ray.data.readers import read_corpus
from conlst_ray.data.schema import ROW_SCHEMA, CorpusError
from conlst_ray.data.synthetic import PROFILES, SOURCE_LANG, TARGET_LANGS, SyntheticBenchmark
from tests.helpers import cue_visibility


def test_deterministic_by_seed(small_bench):
    again = SyntheticBenchmark(seed=5, n_source_train=300, n_unlabelled=120, n_dev=90, n_test=60)
    other = SyntheticBenchmark(seed=6, n_source_train=300, n_unlabelled=120, n_dev=90, n_test=60)
    assert small_bench.table("far", "dev").equals(again.table("far", "dev"))
    assert not small_bench.table("far", "dev").equals(other.table("far", "dev"))


def test_sizes_schema_balance_and_unique_ids(small_bench):
    assert small_bench.table(SOURCE_LANG, "train").num_rows == 300
    for lang in TARGET_LANGS:
        for split, n in (("unlabelled", 120), ("dev", 90), ("test", 60)):
            table = small_bench.table(lang, split)
            assert table.schema == ROW_SCHEMA and table.num_rows == n
    dev = small_bench.table("mid", "dev")
    assert np.bincount(dev.column("label").to_numpy(), minlength=3).tolist() == [30, 30, 30]
    ids = [i for lang in small_bench.languages for i in small_bench.table(lang, "dev").column("id").to_pylist()]
    assert len(ids) == len(set(ids))


def test_at_least_four_targets_graded_by_distance():
    assert len(TARGET_LANGS) >= 4
    bench = SyntheticBenchmark.from_config()
    known = [cue_visibility(bench, lang)["cue_forms_known"] for lang in TARGET_LANGS]
    false = [cue_visibility(bench, lang)["false_friends"] for lang in TARGET_LANGS]
    assert known == sorted(known, reverse=True) and known[0] < 1.0
    assert false == sorted(false) and false[-1] > 0
    shared = [p.shared for p in PROFILES[1:]]
    assert shared == sorted(shared, reverse=True)


def test_farther_language_shares_a_subset_of_nearer_forms():
    bench = SyntheticBenchmark.from_config()
    src = bench.lexicons[SOURCE_LANG]

    def shared(lang):
        return {i for i, f in enumerate(bench.lexicons[lang]) if f == src[i]}

    for near, far in zip(TARGET_LANGS, TARGET_LANGS[1:]):
        assert shared(far) <= shared(near)


def test_every_form_is_one_token_of_the_offline_tokenizer(synthetic_tokenizer):
    bench = SyntheticBenchmark.from_config()
    row = bench.table("distant", "dev").slice(0, 1).to_pylist()[0]
    tokens = synthetic_tokenizer.tokenize(row["text"])
    assert tokens == row["text"].split() and "[UNK]" not in tokens


def test_spec_reading_and_errors():
    cfg = SyntheticConfig(seed=5, n_source_train=300, n_unlabelled=120, n_dev=90, n_test=60)
    table, report = read_corpus("synthetic:unlabelled", "near", synthetic_cfg=cfg, max_rows=10)
    assert table.num_rows == report.rows == 10
    with pytest.raises(CorpusError, match="unknown language 'fr'"):
        read_corpus("synthetic:dev", "fr", synthetic_cfg=cfg)
    with pytest.raises(CorpusError, match="labelled source corpus"):
        read_corpus("synthetic:train", "far", synthetic_cfg=cfg)
