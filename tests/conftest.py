"""Shared fixtures. Real data is read from ../shared/data (never copied into
the repository); CONLST_SHARED_DATA overrides the location."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONLST_SHARED_DATA", REPO.parent / "shared" / "data"))
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
MNLI_LANGS = ("ar", "de", "en", "es", "fr", "sw", "tr", "ur", "vi", "zh")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "xnli").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set CONLST_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mbert_tokenizer(shared_data):
    from conlst_ray.models.encoder import wordpiece_tokenizer

    return wordpiece_tokenizer(shared_data / "vocab" / "bert-base-multilingual-cased-vocab.txt")


@pytest.fixture(scope="session")
def small_bench():
    from conlst_ray.data.synthetic import SyntheticBenchmark

    return SyntheticBenchmark(seed=5, n_source_train=300, n_unlabelled=120, n_dev=90, n_test=60)


@pytest.fixture(scope="session")
def synthetic_tokenizer():
    from conlst_ray.models.encoder import synthetic_tokenizer

    return synthetic_tokenizer()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (start-up costs seconds)."""
    import ray

    if not ray.is_initialized():
        # "local": a new instance of its own, never a cluster another test or process started here
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def two_node_search(tmp_path_factory):
    """A 2-trial smoke search on a real two-node Ray cluster (tests/two_node_job.py,
    in a subprocess so that its cluster does not meet ``ray_session``). Shared by
    test_two_node (placement) and test_tune (outputs, resume): one search costs
    about two minutes here. Returns (output_dir, the search's arguments, the
    finished subprocess)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("two_node")
    job = Path(__file__).with_name("two_node_job.py")
    # Clients that join a token-authenticated cluster by address need the mode set.
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           # Ray Data starts a pool's actors asynchronously: on a loaded machine a
           # small corpus can be labelled before the second actor is placed. Wait for both.
           "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"}
    proc = subprocess.run([sys.executable, str(job), str(out)], env=env, capture_output=True, text=True, timeout=900)
    sys.path.insert(0, str(job.parent))
    try:
        from two_node_job import ARGS
    finally:
        sys.path.remove(str(job.parent))
    return out, ARGS + [f"output_dir={out}"], proc
