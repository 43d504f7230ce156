"""The Ray Data pseudo-labelling job on real XNLI dev text with the real mBERT
tokenizer and a tiny BERT: equality with a direct forward pass, resume after
an interruption, survival of a killed inference actor, clear errors."""

import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import logged

from conlst_ray.config import load_config
from conlst_ray.data.readers import read_languages
from conlst_ray.data.schema import CorpusError
from conlst_ray.models.encoder import ConlstEncoder, tiny_bert
from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label, read_pseudo_labels
from conlst_ray.training.batches import encode_table
from conlst_ray.training.inference import predict_proba

LANGS = ["fr", "de", "zh"]
ROWS = 240


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def job(tmp_path_factory, shared_data, mbert_tokenizer, ray_session):
    root = tmp_path_factory.mktemp("pl")
    cfg = load_config(None, [f"data.target_train=xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv",
                             f"data.max_rows={ROWS}", "data.shard_rows=80",
                             "resources.actor_batch_rows=40", "resources.inference_batch_size=16",
                             "resources.driver_inference_rows=0"])  # the Ray Data job, whatever the size
    torch.manual_seed(0)
    model = ConlstEncoder(tiny_bert(len(mbert_tokenizer), cfg.model.tiny))
    model.save(root / "model", mbert_tokenizer)
    manifests = ingest_corpora(cfg.data.target_train, LANGS, root / "corpus", cfg.data)
    return cfg, root, manifests


def run(job, out, **kwargs):
    cfg, root, manifests = job
    return pseudo_label(str(root / "model"), CachedCorpus(root / "corpus", manifests), out, cfg, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(job):
    _, root, _ = job
    report = run(job, root / "full")
    return read_pseudo_labels(root / "full"), report


@pytest.mark.slow
def test_ingest_shards_every_language(job):
    _, root, manifests = job
    assert {lang: m["rows"] for lang, m in manifests.items()} == {lang: ROWS for lang in LANGS}
    assert all(len(m["shards"]) == 3 for m in manifests.values())


@pytest.mark.slow
def test_pipeline_equals_a_direct_forward_pass(job, uninterrupted, shared_data, mbert_tokenizer):
    cfg, root, _ = job
    out, report = uninterrupted
    assert len(report.computed) == 9 and report.rows == 3 * ROWS
    ids = out.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3 * ROWS                      # every id exactly once
    table, _ = read_languages(f"xnli_tsv:{shared_data}/xnli/dev-{{lang}}.tsv", LANGS, max_rows=ROWS)
    direct = predict_proba(ConlstEncoder.load(root / "model"), encode_table(mbert_tokenizer, table, 128),
                           mbert_tokenizer.pad_token_id, batch_size=64)
    by_id = dict(zip(ids, np.asarray(out.column("q").to_pylist(), dtype=np.float32)))
    q = np.stack([by_id[i] for i in table.column("id").to_pylist()])
    np.testing.assert_allclose(q, direct, atol=1e-5)
    labels = dict(zip(ids, out.column("pseudo_label").to_pylist()))
    assert [labels[i] for i in table.column("id").to_pylist()] == direct.argmax(-1).tolist()
    conf = dict(zip(ids, out.column("confidence").to_pylist()))
    np.testing.assert_allclose([conf[i] for i in table.column("id").to_pylist()], direct.max(-1), atol=1e-5)


@pytest.mark.slow
def test_interrupted_run_resumes_without_recomputing(job, uninterrupted, tmp_path):
    def stop_after_first_shard(report):
        if report.computed:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run(job, tmp_path, on_progress=stop_after_first_shard)
    done = sorted(p.relative_to(tmp_path).as_posix()[:-8] for p in tmp_path.glob("lang=*/shard-*.parquet"))
    assert 1 <= len(done) < 9
    stamps = {k: (tmp_path / f"{k}.parquet").stat().st_mtime_ns for k in done}
    report = run(job, tmp_path)
    assert sorted(report.skipped) == done
    assert not set(report.computed) & set(done) and len(report.computed) == 9 - len(done)
    assert {k: (tmp_path / f"{k}.parquet").stat().st_mtime_ns for k in done} == stamps
    resumed, full = read_pseudo_labels(tmp_path), uninterrupted[0]
    assert resumed.column("id").to_pylist() == full.column("id").to_pylist()
    assert resumed.column("pseudo_label").to_pylist() == full.column("pseudo_label").to_pylist()
    np.testing.assert_allclose(np.asarray(resumed.column("q").to_pylist()),
                               np.asarray(full.column("q").to_pylist()), atol=1e-5)
    again = run(job, tmp_path)
    assert again.computed == [] and len(again.skipped) == 9


@pytest.mark.slow
def test_killed_inference_actor_is_replaced_and_no_row_is_lost(job, uninterrupted, tmp_path):
    import ray
    from ray.util.state import list_actors

    killed = []

    def kill_predictor(report):
        if report.computed and not killed:
            # the job's only actor pool is the Predictor's (Ray Data names its actors _MapWorker)
            # this session's own cluster, by address: other Ray instances may run on the machine
            alive = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")])
            actors = [a for a in alive if "MapWorker" in a.class_name]
            assert actors, "no inference actor found"
            os.kill(actors[0].pid, signal.SIGKILL)
            killed.append(actors[0].pid)

    report = run(job, tmp_path, on_progress=kill_predictor)
    assert killed and len(report.computed) == 9
    out = read_pseudo_labels(tmp_path)
    ids = out.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3 * ROWS
    assert out.column("pseudo_label").to_pylist() == uninterrupted[0].column("pseudo_label").to_pylist()


@pytest.mark.slow
def test_a_small_corpus_is_labelled_in_the_driver_as_the_job_labels_it(job, uninterrupted, tmp_path):
    """Up to resources.driver_inference_rows rows (one CPU actor), the same
    two steps run in the driver, shard by shard: the same rows, labels and
    q as the Ray Data job, no inference actor started, and an interrupted
    run resumes where it stopped, as the job's does."""
    import ray
    from ray.util.state import list_actors

    from conlst_ray.config import with_values

    cfg, root, manifests = job
    small = with_values(cfg, {"resources.driver_inference_rows": 3 * ROWS})
    lines = []

    def stop_after_first_shard(report):
        if report.computed:
            raise Interrupt()

    def label(**kwargs):
        with logged() as said:
            try:
                return pseudo_label(str(root / "model"), CachedCorpus(root / "corpus", manifests), tmp_path, small,
                                    **kwargs)
            finally:
                lines.extend(said)

    def actors() -> set:  # every inference actor this session's Ray has started, alive or not
        listed = list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000)
        return {a.actor_id for a in listed if "MapWorker" in a.class_name}

    before = actors()
    with pytest.raises(Interrupt):
        label(on_progress=stop_after_first_shard)
    assert len(list(tmp_path.glob("lang=*/shard-*.parquet"))) == 1
    report = label()
    assert len(report.skipped) == 1 and len(report.computed) == 8
    assert any("labelled in the driver" in line for line in lines) and actors() == before
    out, full = read_pseudo_labels(tmp_path), uninterrupted[0]
    assert out.column("id").to_pylist() == full.column("id").to_pylist()
    assert out.column("pseudo_label").to_pylist() == full.column("pseudo_label").to_pylist()
    np.testing.assert_allclose(np.asarray(out.column("q").to_pylist()), np.asarray(full.column("q").to_pylist()),
                               atol=1e-5)


def test_empty_language_and_missing_column_fail_with_names(job, tmp_path):
    cfg, _, _ = job
    (tmp_path / "dev-xx.tsv").write_text("")
    with pytest.raises(CorpusError, match="language 'xx' has no rows"):
        ingest_corpora(f"xnli_tsv:{tmp_path}/dev-{{lang}}.tsv", ["xx"], tmp_path / "c1", cfg.data)
    pq.write_table(pa.table({"premise": ["a"], "label": [0]}), tmp_path / "yy.parquet")
    with pytest.raises(CorpusError, match=r"yy.parquet: no column 'text_pair' or 'hypothesis' for text_pair"):
        ingest_corpora(f"parquet:{tmp_path}/{{lang}}.parquet", ["yy"], tmp_path / "c2", cfg.data)
    assert not (tmp_path / "c2" / "lang=yy" / "_manifest.json").exists()  # nothing half-written claimed done
