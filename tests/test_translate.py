"""Translation: code tables, start-up coverage checks, and the Ray Data job
(back-translation and translate-train) with tiny seq2seq models built from
configs -- their output is meaningless, the pipeline is real."""

import pytest

from conlst_ray.config import TranslationConfig, load_config
from conlst_ray.models.translation import CODE_TABLES, TranslationConfigError, Translator, check_coverage, detect_family
from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
from conlst_ray.ray_jobs.translate import CachedCorpus, TranslationJob, translate
from tests.conftest import XNLI_LANGS
from tests.helpers import read_translations, tiny_translation_model

ROWS = 30


def test_code_tables_cover_the_documented_xnli_languages():
    assert sorted(set(XNLI_LANGS) - set(CODE_TABLES["mbart50"])) == ["bg", "el"]
    assert len(set(XNLI_LANGS) & set(CODE_TABLES["mbart50"])) == 13
    assert set(XNLI_LANGS) <= set(CODE_TABLES["nllb"]) and set(XNLI_LANGS) <= set(CODE_TABLES["m2m100"])
    assert CODE_TABLES["nllb"]["zh"] == "zho_Hans" and CODE_TABLES["mbart50"]["sw"] == "sw_KE"


def test_uncovered_language_is_an_error_or_a_masking_fallback():
    with pytest.raises(TranslationConfigError, match=r"\['bg', 'el'\] not covered by mbart50"):
        check_coverage("mbart50", ["fr", "bg", "el"], "error")
    from helpers import logged

    with logged() as warnings:
        covered, fallback = check_coverage("mbart50", ["fr", "bg"], "mask_only")
    assert covered == ["fr"] and fallback == ["bg"] and "masking-only" in warnings[0]


def test_family_detection_from_model_configs(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    tiny_translation_model(tmp_path / "mbart", "mbart50")
    tiny_translation_model(tmp_path / "nllb", "nllb", arch="m2m100")
    tiny_translation_model(tmp_path / "m2m", "m2m100", arch="m2m100")
    for name, family in (("mbart", "mbart50"), ("nllb", "nllb"), ("m2m", "m2m100")):
        path = tmp_path / name
        assert detect_family(AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)) == family


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data, ray_session):
    root = tmp_path_factory.mktemp("tr")
    cfg = load_config(None, [f"data.max_rows={ROWS}", "data.shard_rows=12"])
    words = (shared_data / "xnli" / "dev-fr.tsv").read_text(encoding="utf-8").split()[:300]
    tiny_translation_model(root / "mbart", "mbart50", words)
    tiny_translation_model(root / "nllb", "nllb", words, arch="m2m100")
    spec = f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv"
    targets = ingest_corpora(spec, ["fr", "sw", "bg"], root / "corpus", cfg.data)
    source = ingest_corpora(spec, ["en"], root / "source_corpus", cfg.data)
    return root, targets, source


@pytest.mark.slow
def test_translator_returns_one_nonempty_sentence_per_input(corpus):
    root, _, _ = corpus
    t = Translator(str(root / "mbart"), max_new_tokens=6, batch_size=4)
    sentences = ["Le chat dort .", "Il pleut", "Bonjour"]
    out = t.back_translate(sentences, "fr", "en")
    assert len(out) == 3 and all(out)
    assert out != sentences  # the model's generation: a translator handing back its input fails here


@pytest.mark.slow
def test_back_translation_job_with_fallback_and_cache(corpus):
    root, targets, _ = corpus
    cfg = TranslationConfig(model=str(root / "mbart"), on_uncovered="mask_only", max_new_tokens=6, batch_size=8)
    report, fallback = translate(TranslationJob(cfg, CachedCorpus(root / "corpus", targets), root / "bt", "back"))
    assert fallback == ["bg"]
    out = read_translations(root / "bt")
    ids = out.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 * ROWS
    assert set(out.column("lang").to_pylist()) == {"fr", "sw"}
    assert out.column("source_id").to_pylist() == ids
    assert all(out.column("text").to_pylist()) and all(out.column("text_pair").to_pylist())
    again, _ = translate(TranslationJob(cfg, CachedCorpus(root / "corpus", targets), root / "bt", "back"))
    assert again.computed == [] and len(again.skipped) == len(report.computed)  # reused from the cache


@pytest.mark.slow
def test_translate_train_into_several_targets_keeps_labels(corpus):
    root, _, source = corpus
    cfg = TranslationConfig(model=str(root / "nllb"), max_new_tokens=6, batch_size=8)
    report, fallback = translate(TranslationJob(cfg, CachedCorpus(root / "source_corpus", source), root / "mt", "train",
                                               targets=("fr", "bg")))
    assert fallback == [] and report.rows == 2 * ROWS
    out = read_translations(root / "mt")
    assert out.num_rows == 2 * ROWS and len(set(out.column("id").to_pylist())) == 2 * ROWS
    bg = read_translations(root / "mt", lang="bg")
    assert bg.num_rows == ROWS and bg.column("id").to_pylist()[0].startswith("bg-mt-en-")
    import pyarrow.parquet as pq

    src = pq.read_table(next((root / "source_corpus" / "lang=en").glob("shard-*.parquet")))
    labels = dict(zip(src.column("id").to_pylist(), src.column("label").to_pylist()))
    assert all(labels[s] == y for s, y in zip(bg.column("source_id").to_pylist(), bg.column("label").to_pylist())
               if s in labels)


def test_unknown_language_fails_at_start_up_before_any_work(corpus):
    root, targets, _ = corpus
    cfg = TranslationConfig(model=str(root / "mbart"))  # on_uncovered=error
    with pytest.raises(TranslationConfigError, match=r"\['bg'\] not covered"):
        translate(TranslationJob(cfg, CachedCorpus(root / "corpus", targets), root / "bt_err", "back"))
    assert not (root / "bt_err").exists()
    with pytest.raises(TranslationConfigError, match=r"\['xx'\] not covered"):
        translate(TranslationJob(TranslationConfig(model=str(root / "nllb")), CachedCorpus(root, {"en": {}}),
                                 root / "e",
                                 "train", targets=("xx",)))


def test_synthetic_translator_paraphrases_through_the_concepts():
    from collections import Counter

    from conlst_ray.data.synthetic import SyntheticBenchmark
    from conlst_ray.models.translation import SyntheticTranslator

    bench = SyntheticBenchmark(seed=13, n_unlabelled=60)
    mt = SyntheticTranslator(benchmark_seed=13)
    function = set(bench.concepts["function"])
    texts = bench.table("far", "unlabelled").column("text_pair").to_pylist()
    back = mt.back_translate(texts, "far", "src")
    assert back == mt.back_translate(texts, "far", "src")                 # deterministic
    lex = bench.lexicons["far"]
    concept = {form: c for c, form in enumerate(lex)}
    changed = 0
    for text, para in zip(texts, back):
        before, after = [concept[w] for w in text.split()], [concept[w] for w in para.split()]
        content = Counter(c for c in before if c not in function)
        assert Counter(c for c in after if c not in function) == content   # cues and topics kept
        assert len(after) == len(before)
        changed += para != text
    assert changed >= 0.8 * len(texts)                                    # a paraphrase, not a copy
    # to the pivot: every word becomes the source form of its concept
    pivot = mt.translate(texts[:5], "far", "src")
    assert all(w in set(bench.lexicons["src"]) for s in pivot for w in s.split())


def test_back_translation_job_with_the_synthetic_translator(tmp_path, ray_session):
    cfg = load_config(None, ["data.synthetic.n_unlabelled=40", "data.shard_rows=20"])
    corpus = tmp_path / "corpus"
    manifests = ingest_corpora(cfg.data.target_train, ["near", "distant"], corpus, cfg.data)
    tr = TranslationConfig(model="synthetic", pivot_lang="src")
    report, fallback = translate(TranslationJob(tr, CachedCorpus(corpus, manifests), tmp_path / "bt", "back"))
    assert report.rows == 80 and fallback == []
    table = read_translations(tmp_path / "bt")
    assert sorted(set(table.column("lang").to_pylist())) == ["distant", "near"]
    assert table.column("id").to_pylist() == table.column("source_id").to_pylist()
