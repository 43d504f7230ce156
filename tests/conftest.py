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
    from conlst_ray.model import wordpiece_tokenizer

    return wordpiece_tokenizer(shared_data / "vocab" / "bert-base-multilingual-cased-vocab.txt")


@pytest.fixture(scope="session")
def small_bench():
    from conlst_ray.data.synthetic import SyntheticBenchmark

    return SyntheticBenchmark(seed=5, n_source_train=300, n_unlabelled=120, n_dev=90, n_test=60)


@pytest.fixture(scope="session")
def synthetic_tokenizer():
    from conlst_ray.model import synthetic_tokenizer

    return synthetic_tokenizer()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (start-up costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False, include_dashboard=True)
    yield ray
    ray.shutdown()
