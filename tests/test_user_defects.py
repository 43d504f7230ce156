"""What a careful user meets on a fresh clone, by behaviour: a mistake is one
line and exit 2 before any expensive work, Ctrl+C stops every stage and the
resume completes, caches hit, nothing is silently read twice or written
where it should not be."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import logged, private_mounts
from jobs import TINY

from conlst_ray.commands import evaluate
from conlst_ray.config import ConfigError, load_config
from conlst_ray.pipeline.preflight import UserError, preflight
from conlst_ray.pipeline.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
T = TINY  # a small run on the embedded benchmark


def cli(module: str, *args, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"conlst_ray.{module}", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


# -- Resources the cluster cannot give: refused, never a silent wait

@pytest.mark.parametrize("override, key", [("resources.use_gpu=true", "resources.use_gpu"),
                                           ("resources.num_workers=16", "resources.num_workers")])
def test_resources_the_machine_lacks_are_refused_in_one_line(tmp_path, override, key):
    out = tmp_path / "out"
    proc = cli("run", *T, f"output_dir={out}", override, timeout=90)  # hung until SIGKILL before
    assert key in one_error_line(proc)
    assert not out.exists()                                           # nothing written


def test_an_autoscaling_run_says_what_it_waits_for():
    from conlst_ray.pipeline.preflight import check_resources, resource_problems

    cfg = load_config(None, ["resources.num_workers=4", "resources.wait_for_resources=true"])
    with logged() as said:
        check_resources(cfg, {"CPU": 2.0})
    assert len(said) == 1 and "waiting" in said[0] and "resources.num_workers=4" in said[0]
    assert resource_problems(load_config(None, ["resources.num_workers=2"]), {"CPU": 2.0}) == []
    with pytest.raises(UserError, match="resources.gpus_per_actor"):
        check_resources(load_config(None, ["resources.gpus_per_actor=1"]), {"CPU": 8.0})


# -- Stopping: Ctrl+C stops every stage, exits 130 and says how to continue; the resume completes.
#    One command at a time in a run directory. (One run, tests/jobs.py:interrupted_run.)

@pytest.mark.slow
def test_ctrl_c_in_every_stage_exits_130_and_the_resume_completes(interrupted_run):
    for stage, seen in interrupted_run["stages"].items():
        assert seen["running_at_sigint"], f"the run ended before {stage} could be interrupted"
        assert seen["rc"] == 130, (stage, seen["stderr"][-2000:])
        assert f"stopped in stage {stage}; continue with: python -m conlst_ray.run" in seen["stderr"], stage
        assert not seen["done"], stage
    assert list(interrupted_run["stages"]) == ["source", "pseudo_labels", "conl", "ssl"]
    done = interrupted_run["resume"]
    assert done["rc"] == 0, done["stderr"][-2000:]
    assert done["done"] == ["source", "pseudo_labels", "conl", "ssl"] and done["results"]


@pytest.mark.slow
def test_a_second_command_in_a_busy_run_directory_is_refused_and_a_dead_holders_lock_is_taken_over(interrupted_run):
    """Two real processes: while a run works in RUN, a --resume of RUN is
    refused in one line naming the first process. A command that ends, by
    Ctrl+C or at its end, leaves no lock; a lock left by a process that no
    longer exists (kill -9) does not block the next command."""
    assert interrupted_run["locked"], "the first run never locked its directory"
    second = interrupted_run["second"]
    line = one_error_line(subprocess.CompletedProcess([], second["rc"], "", second["stderr"]))
    assert f"in use by process {interrupted_run['first_pid']}" in line
    assert not [stage for stage, seen in interrupted_run["stages"].items() if seen["lock_left"]]
    done = interrupted_run["resume"]          # after a lock naming a process that is gone was left
    assert done["rc"] == 0 and not done["lock_left"], done["stderr"][-2000:]


# -- Caches: the corpus cache hits in a second stage and a second run

def test_a_second_stage_and_a_second_run_reuse_every_cached_corpus(tmp_path, ray_session):
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora

    def ingest(cfg, said):
        with logged() as lines:
            out = ingest_corpora(cfg.data.target_train, cfg.data.target_langs, tmp_path / "c", cfg.data)
        said += lines
        return out

    said: list = []
    first = ingest(load_config(None, T), said)
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("shard-*.parquet")}
    again: list = []
    assert ingest(load_config(None, T), again) == first       # a second run: a config loaded anew
    assert ingest(load_config(None, T), again) == first       # a second stage
    assert not [line for line in again if "rebuilding" in line], again
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # nothing rewritten


# -- Corpora: a file read for several languages must say which rows are whose

def test_a_file_read_for_several_languages_must_name_them(tmp_path, shared_data, tiny_model):
    one_file = f"xnli_tsv:{shared_data}/xnli/dev-en.tsv"
    with pytest.raises(UserError, match=r"data.target_train: .* 2 languages .*\{lang\}"):
        preflight(load_config(None, [f"output_dir={tmp_path}", f"data.target_train={one_file}",
                                     "data.target_langs=[fr,de]"]))
    proc = cli("evaluate", tiny_model, "--corpus", one_file, "--langs", "en", "fr")
    assert "--corpus" in one_error_line(proc) and "{lang}" in proc.stderr


# -- Corpora: a bad row anywhere is found before any training

@pytest.mark.slow
def test_a_bad_row_anywhere_is_an_error_before_training(tmp_path, shared_data):
    lines = (shared_data / "xnli" / "dev-de.tsv").read_text(encoding="utf-8").splitlines()[:80]
    lines[59] = "\t".join(lines[59].split("\t")[:2] + ["maybe"])
    (tmp_path / "t-de.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = cli("run", *T[:-1], "data.target_langs=[de]", f"data.target_train=xnli_tsv:{tmp_path}/t-{{lang}}.tsv",
               "data.target_dev=null", "data.target_test=null", f"output_dir={out}", "run_name=r")
    assert "t-de.tsv:60" in one_error_line(proc)
    assert not (out / "r" / "source" / "steps.jsonl").exists()   # no source step was trained


# -- Configuration: errors before Ray, a failed start that can be resumed

@pytest.mark.parametrize("override, key", [("model.tiny.num_heads=3", "model.tiny.num_heads"),
                                           ("data.max_length=512", "data.max_length")])
def test_model_shapes_that_cannot_be_built_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_preflight_refuses_an_unusable_cache_dir_and_a_corrupt_checkpoint(tmp_path, tiny_model):
    with pytest.raises(UserError, match="model.cache_dir: /proc/x"):
        preflight(load_config(None, [f"output_dir={tmp_path}", "model.name_or_path=multilingual-e5-small",
                                     "model.tokenizer=null", "model.cache_dir=/proc/x"]))
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        preflight(load_config(None, [f"output_dir={tmp_path}", f"model.source_checkpoint={ckpt}"]))


def test_a_malformed_address_is_one_line():
    assert "--address" in one_error_line(cli("run", *T, "--address", "not a url", timeout=60))


def test_an_unfinished_stage_restarts_with_the_fixed_value_and_a_finished_one_is_kept(tmp_path):
    from conlst_ray.config.provenance import StaleError, stage_fingerprint

    cfg = load_config(None, [f"output_dir={tmp_path}", "run_name=r", "source.lr=9"])
    run = RunDir.create(cfg)
    assert not run.begin("source", stage_fingerprint("source", cfg))   # started, then failed
    fixed = load_config(None, [f"output_dir={tmp_path}", "run_name=r", "source.lr=0.001"])
    run = RunDir.create(fixed, resume=True)                             # refused before
    assert not (run.root / "source").exists()                          # starts over
    assert not run.begin("source", stage_fingerprint("source", fixed))
    run.mark_done("source", {})
    with pytest.raises(StaleError, match="source.lr"):                  # a finished stage still counts
        RunDir.create(cfg, resume=True)


# -- Configuration: run_name and output_dir

@pytest.mark.parametrize("name", [".", "..", "../..", "/tmp/x", "a/b"])
def test_run_name_is_one_folder_below_output_dir(name):
    with pytest.raises(ConfigError, match="run_name"):
        load_config(None, [f"run_name={name}"])


@pytest.mark.slow
def test_unreachable_object_storage_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    """output_dir may be object storage; storage that cannot be
    written is refused before any work, and no local mirror is started."""
    env = {"CONLST_RAY_CACHE_DIR": str(tmp_path / "cache")}
    proc = cli("run", "output_dir=foo://bucket/x", timeout=60, env=env)
    assert "output_dir = 'foo://bucket/x': cannot write to this storage" in one_error_line(proc)
    proc = cli("run", "output_dir=s3://bucket/x?endpoint_override=127.0.0.1:1&scheme=http", timeout=90, env=env)
    assert "cannot write to this storage" in one_error_line(proc) and "output_dir" in one_error_line(proc)
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_failed_preflight_writes_nothing_and_resume_needs_a_name(tmp_path):
    out = tmp_path / "out"
    proc = cli("run", f"output_dir={out}", f"data.target_train=xnli_tsv:{tmp_path}/none-{{lang}}.tsv", timeout=60)
    assert "data.target_train" in one_error_line(proc)
    assert not out.exists()
    assert "run_name" in one_error_line(cli("run", f"output_dir={out}", "--resume", timeout=60))


# -- evaluate: every argument checked before scoring

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from conlst_ray.models.encoder import build_model, build_tokenizer

    cfg = load_config(None, [])
    tok = build_tokenizer(cfg.model, cfg.data)
    return str(build_model(cfg.model, tok).save(tmp_path_factory.mktemp("m") / "model", tok))


@pytest.mark.parametrize("case, expected", [
    ("not_a_model", "holds no model"), ("corrupt_meta", "config.json"), ("no_weights", "holds no weights"),
    ("--batch-size=0", "--batch-size"), ("--max-length=100000", "positions"), ("--max-length=-3", "--max-length"),
    ("--out=/proc/x/y", "--out")])
def test_evaluate_refuses_bad_arguments_before_scoring(case, expected, tiny_model, tmp_path, capsys):
    import shutil

    model, extra = Path(tiny_model), []
    if case == "not_a_model":
        model = model.parent
    elif case in ("corrupt_meta", "no_weights"):
        model = Path(shutil.copytree(tiny_model, tmp_path / "m"))
        if case == "corrupt_meta":
            (model / "config.json").write_text("{")
        else:
            for f in model.glob("*.safetensors"):
                f.unlink()
    else:
        extra = case.split("=", 1)
    assert evaluate.main([str(model), "--corpus", "synthetic:dev", "--langs", "near", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


# -- Configuration: YAML 1.1 surprises

def test_yes_no_on_off_are_read_as_words(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  target_langs: [de, no]\n  task:\n    kind: single\n    labels: [yes, no]\n")
    cfg = load_config(p)
    assert cfg.data.target_langs == ["de", "no"] and cfg.data.task.labels == ["yes", "no"]
    with pytest.raises(ConfigError, match="ssl.enabled: expected bool"):
        load_config(None, ["ssl.enabled=yes"])


# -- Readers, messages and small commands

def test_column_zero_is_a_column(tmp_path):
    from conlst_ray.data.readers import read_corpus
    from conlst_ray.data.task import Task

    (tmp_path / "x-en.tsv").write_text("good film\tpositive\nbad film\tnegative\n")
    task = Task.of(load_config(None, ["data.task.kind=single", "data.task.labels=[negative,positive]",
                                      "data.task.columns={text: 0, label: 1}"]).data.task)
    table, _ = read_corpus(f"tsv:{tmp_path}/x-en.tsv?header=none", "en", task=task)
    assert table.column("text").to_pylist() == ["good film", "bad film"]


@pytest.mark.parametrize("override, match", [
    ("data.target_langs=[]", "data.target_langs is empty"), ("data.target_langs=[near,near]", "near twice"),
    ("data.task.columns={text_pair: b}", "text_pair")])
def test_languages_and_a_single_task_s_columns_are_checked(override, match):
    extra = ["data.task.kind=single"] if "text_pair" in override else []
    with pytest.raises(ConfigError, match=match):
        load_config(None, extra + [override])


def test_corpus_errors_name_the_right_column_and_line(tmp_path, ray_session):
    from conlst_ray.data.readers import read_corpus
    from conlst_ray.data.schema import CorpusError
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora

    (tmp_path / "a-en.tsv").write_text("p\th\tentailment\n")
    with pytest.raises(CorpusError, match=r"no column label=9: the row has 3 columns"):
        read_corpus(f"tsv:{tmp_path}/a-en.tsv?header=none&text=0&text_pair=1&label=9", "en")
    (tmp_path / "b-en.csv").write_text('x,y,entailment\n"p,q,neutral\nr,s,neutral\n')
    with pytest.raises(CorpusError, match=r"b-en.csv:2: a quote opened on this line"):
        read_corpus(f"csv:{tmp_path}/b-en.csv?header=none&text=0&text_pair=1&label=2", "en")
    (tmp_path / "c-en.tsv").write_text("p\th\tmaybe\nq\tk\tperhaps\n")
    cfg = load_config(None, ["data.on_malformed=skip"])
    with pytest.raises(CorpusError, match=r"has no rows \(.*2 malformed rows skipped"):
        ingest_corpora(f"xnli_tsv:{tmp_path}/c-{{lang}}.tsv", ["en"], tmp_path / "cache", cfg.data)


def test_a_config_folder_is_named_as_one(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_an_unreachable_hub_fails_in_seconds_naming_the_key(tmp_path, monkeypatch):
    from conlst_ray.pipeline import preflight as pf

    monkeypatch.setattr(pf, "hub_reachable", lambda timeout=3.0: False, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")         # restored after the test, whatever preflight sets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    start = time.time()
    with pytest.raises(UserError, match="model.name_or_path: someone/not-cached-model .* cannot be reached"):
        preflight(load_config(None, [f"output_dir={tmp_path}", "model.name_or_path=someone/not-cached-model",
                                     "model.tokenizer=null"]))
    assert time.time() - start < 10
    assert os.environ.get("HF_HUB_OFFLINE") == "1"   # cached ids then load without retrying


# -- The tests themselves: each asks its own cluster, whatever else runs on the machine

def test_every_state_api_call_in_the_tests_names_its_cluster():
    """Other Ray instances may run on this machine: a test that asks Ray's state
    API without an address fails with 'multiple active Ray instances' (as
    test_pseudo_label's killed-actor test once did). Every call names one."""
    import ast

    unnamed = []
    for path in Path(__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in ("list_actors", "list_nodes", "list_tasks") and all(k.arg != "address" for k in node.keywords):
                unnamed.append(f"{path.name}:{node.lineno}")
    assert not unnamed, unnamed


# -- Configuration: languages and typed override values

def test_a_language_no_corpus_has_is_refused_before_anything_is_written(tmp_path):
    """data.target_langs=[nera] (a typo of near): one line naming the key and
    the languages there are, before Ray starts; no run folder is left for
    the corrected command to trip on."""
    line = one_error_line(cli("run", "data.target_langs=[nera]", f"output_dir={tmp_path}", "run_name=r"))
    assert "data.target_train" in line and "'nera'" in line and "near" in line
    assert not (tmp_path / "r").exists()


def test_override_values_take_the_type_of_their_key():
    from conlst_ray.api import _value

    assert load_config(None, ["run_name=0123"]).run_name == "0123"           # not YAML 1.1's octal 83
    assert load_config(None, ["run_name=2024"]).run_name == "2024"           # text, not a refused int
    assert load_config(None, ["model.tokenizer=null"]).model.tokenizer is None
    langs = ("near", "far")                                                  # the Python API's tuple
    assert load_config(None, [f"data.target_langs={_value(langs)}"]).data.target_langs == ["near", "far"]


# -- A full disk: one line naming the file, nothing half-written, the resume finishes

@pytest.mark.slow
@pytest.mark.skipif(not private_mounts(), reason="needs unshare -rm (user namespaces) to mount a small tmpfs")
def test_a_full_disk_is_one_line_naming_the_file_and_the_resume_finishes(full_disk_run):
    """A real full disk (tests/jobs.py:full_disk_run): output_dir on a 2 MiB
    tmpfs, which the source model's weights do not fit. The run ends in one
    line naming the file it could not write and the command that continues
    it; no finished stage holds a truncated model. With the disk grown, that
    --resume redoes the stage (whole); the stages after it are any resume's (test_run)."""
    seen = full_disk_run
    assert seen["rc"] == 0, seen["stderr"][-2000:]
    full = one_error_line(subprocess.CompletedProcess([], int(seen["full_rc"]), "", seen["full_err"]))
    assert f"no space left on the device writing {seen['run']}/" in full, full
    assert "continue with: python -m conlst_ray.run" in full and "--resume" in full, full
    assert seen["resume_rc"] == "0", seen["resume_err"][-2000:]
    assert seen["after_full"] == "{}"  # the stage cut short is not done
    assert seen["after_resume"] == "{'source': None}"


def test_only_a_run_directorys_own_lock_covers_its_stages(tmp_path):
    """What a Ray Train worker watches (storage/lock.py): the lock of the run
    directory above its stage, never another tool's ``.lock`` (pytest keeps
    one in its numbered folders), and it says when the holder lost it."""
    import json
    import socket

    from conlst_ray.storage import lock as run_lock

    (tmp_path / ".lock").write_text("12345")
    run = tmp_path / "out" / "r"
    assert run_lock.covering_lock(run / "conl") is None
    run_lock.acquire(run)
    try:
        path, holder = run_lock.covering_lock(run / "targets" / "near" / "conl")
        assert path == run / ".lock" and holder["pid"] == os.getpid()
        assert run_lock.lock_lost(path, holder) is None
        path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
        assert "taken over by process" in run_lock.lock_lost(path, holder)
    finally:
        run_lock.release(run)
