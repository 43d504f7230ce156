"""Shared fixtures. Real data is read from ../shared/data (never copied into
the repository); CONLST_SHARED_DATA overrides the location."""

import os
from pathlib import Path

import battery_job  # noqa: F401 -- registers its job with RUNNER
import jobs  # noqa: F401 -- registers the jobs with RUNNER
import pytest
from background import RUNNER

# Every Ray this session starts (its own, the CLI runs', the two-node clusters') keeps up to 8 idle
# workers instead of one per CPU: the suite's Ray jobs are many small fractional-CPU tasks, and a worker
# killed after a second idle is a new process that imports torch again for the next job. And torch's
# OpenMP threads sleep rather than spin while they wait: the background jobs below share the 2 cores.
# Measured (test_pseudo_label + test_provenance): 152 -> 119 CPU-seconds, 94 -> 80 s.
os.environ.setdefault("RAY_num_workers_soft_limit", "8")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
def tokenised_log(tmp_path_factory) -> Path:
    """The session's tokenisation log (CONLST_RAY_TOKENIZE_LOG): every Ray task of
    ``ray_session`` that tokenises a shard appends "pid rows shard" to it. Set for
    the whole session because a runtime env of one test's own would start a pool
    of new workers (measured: 25 s of a 2-core suite)."""
    return tmp_path_factory.getbasetemp() / "tokenised.log"


@pytest.fixture(scope="session")
def ray_session(tokenised_log):
    """One local Ray instance for the whole test session (start-up costs seconds)."""
    import ray

    from conlst_ray.ray_jobs.tokens import LOG_ENV

    os.environ[LOG_ENV] = str(tokenised_log)  # the raylet's workers inherit the driver's environment
    if not ray.is_initialized():
        # "local": a new instance of its own, never a cluster another test or process started here
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=True)
    yield ray
    ray.shutdown()


# -- End-to-end jobs that run beside the other tests (background.py, jobs.py) --------------------------

def _job_folder(config, name: str) -> Path:
    return config._tmp_path_factory.mktemp(name)


def _jobs_of(item) -> list[str]:
    """The background jobs whose results a test reads."""
    return [name for name in RUNNER.jobs if name in getattr(item, "fixturenames", ())]


def pytest_collection_modifyitems(config, items):
    """The tests that read a job's result run last (in their own order: the sort
    is stable), so that the in-process tests run while the jobs work instead of waiting for them."""
    items.sort(key=lambda item: bool(_jobs_of(item)))


def pytest_collection_finish(session):
    """Start the jobs the selected tests need, in the order the tests will ask for them."""
    if session.config.option.collectonly or session.config.option.setupplan:
        return  # nothing runs
    order = list(dict.fromkeys(name for item in session.items for name in _jobs_of(item)))
    if order:
        RUNNER.start([(name, _job_folder(session.config, name)) for name in order])


def pytest_sessionfinish(session):
    RUNNER.stop()


def _job(request, name: str):
    return RUNNER.result(name, lambda: _job_folder(request.config, name))


@pytest.fixture(scope="session")
def two_node_search(request):
    """A 2-trial smoke search on a real two-node Ray cluster (tests/two_node_job.py,
    in a subprocess so that its cluster does not meet ``ray_session``). Shared by
    test_two_node (placement) and test_tune (outputs, resume). Returns
    (output_dir, the search's arguments, the finished subprocess)."""
    import subprocess

    from two_node_job import ARGS

    job = _job(request, "two_node_search")
    out = Path(job["out"])
    proc = subprocess.CompletedProcess([], job["rc"], job["stdout"], job["stderr"])
    return out, ARGS + [f"output_dir={out}"], proc


@pytest.fixture(scope="session")
def storage_job(request):
    """The pipeline on two nodes that share no files (tests/storage_job.py): (its folder, result.json)."""
    job = _job(request, "storage_job")
    assert job["rc"] == 0 and job["result"].get("rc") == 0, job["log"]
    return Path(job["out"]), job["result"]


def _job_fixture(name: str, doc: str):
    def fixture(request):
        return _job(request, name)

    fixture.__doc__ = doc
    return pytest.fixture(scope="session", name=name)(fixture)


# what each returns: tests/jobs.py
unshared_node = _job_fixture("unshared_node", "A node that cannot see a local output_dir (tests/unshared_node_job.py).")
quick_study = _job_fixture("quick_study", "experiments/study.py at one seed, quick, with one ablation variant.")
interrupted_run = _job_fixture("interrupted_run", "Ctrl+C in every stage of one run, and a second command refused.")
battery_runs = _job_fixture("battery_runs", "A whole run, copies of it damaged and resumed or reported, the API "
                                             "resuming one, predict over 20,000 and 200,000 rows (battery_job.py).")
full_disk_run = _job_fixture("full_disk_run", "A run on a 2 MiB disk, then its resume with the disk grown.")
