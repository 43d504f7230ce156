"""The user battery's last defects (issue 44), each as a real process on real
files damaged the stated way: one line and exit 2, or a rebuild that says so
in one line; never a traceback, never a silently different result, never a
secret shown or stored."""

import subprocess
import sys
from pathlib import Path

import pytest
from battery_job import append_bytes, peak
from test_user_defects import cli, one_error_line

from conlst_ray.config.keys import keys
from conlst_ray.config.sections import Config

SECRET = "S3cr3tV4lue"
WITH_SECRET = {"corpus": f"parquet:s3://AKIDEXAMPLE:{SECRET}@bucket/corpus/{{lang}}.parquet",
               "model": f"s3://bucket/models/m?access_key=AKIDEXAMPLE&secret_key={SECRET}",
               "dir": f"s3://AKIDEXAMPLE:{SECRET}@bucket/runs"}


def _holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


# -- Secrets, everywhere: every key that takes a path or URI

PATH_KEYS = [k for k in keys(Config) if k.path]


def test_the_schema_has_path_keys_of_every_kind():
    assert {k.path for k in PATH_KEYS} == set(WITH_SECRET)
    assert len(PATH_KEYS) >= 10  # corpora, models, tokenizer, checkpoint, cache and output dirs


@pytest.mark.parametrize("key", [k.name for k in PATH_KEYS])
def test_credentials_in_any_path_key_are_refused_masked_and_never_stored(key, tmp_path, capsys, monkeypatch):
    """Given in a config file (the command line's own arguments are checked
    before any config is read: the next test) and through the API."""
    import yaml

    from conlst_ray.api import RunError, run
    from conlst_ray.commands import run as run_mod

    kind = next(k.path for k in PATH_KEYS if k.name == key)
    home, out = tmp_path / "home", tmp_path / "out"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CONLST_RAY_CACHE_DIR", str(home / "cache"))
    *sections, last = key.split(".")
    data: dict = {"output_dir": str(out)}
    node = data
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = WITH_SECRET[kind]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    assert run_mod.main(["--config", str(config)]) == 2
    said = capsys.readouterr()
    line = said.err.strip()
    assert line.startswith("error: ") and len(line.splitlines()) == 1
    assert key in line and "***" in line and "credentials" in line and SECRET not in said.out + said.err
    with pytest.raises(RunError) as failed:
        run(overrides={"output_dir": str(out), key: WITH_SECRET[kind]})  # the key last: output_dir too
    assert key in failed.value.reason and SECRET not in failed.value.reason
    config.unlink()
    assert not _holding(tmp_path, SECRET)


@pytest.mark.parametrize("command", [
    ["predict", "MODEL", "--corpus", WITH_SECRET["corpus"], "--out", "x.csv"],
    ["evaluate", "MODEL", "--corpus", WITH_SECRET["model"], "--langs", "fr"],
    ["pseudo_label", "--model-dir", WITH_SECRET["model"]],
    ["tune", "--storage-path", WITH_SECRET["dir"]],
    ["report", WITH_SECRET["dir"] + "/r"]])
def test_credentials_in_any_command_line_argument_are_refused_masked(command, tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = cli(*command, env=env, timeout=60)
    line = one_error_line(proc)
    assert "***" in line and "credentials" in line and SECRET not in proc.stdout + proc.stderr
    assert not _holding(tmp_path, SECRET)


def test_a_secret_inside_a_search_space_or_a_long_value_is_masked_in_the_error_and_its_log(tmp_path):
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    proc = cli("run", "tune.search_space={ssl.lambda_u: {type: choice, values: [\"s3://K:" + SECRET + "@b/x\"]}}",
               env=env, timeout=60)
    assert "tune.search_space" in one_error_line(proc) and SECRET not in proc.stderr
    huge = "x" * 100_000
    proc = cli("run", f"conl.gamma={huge}", env=env, timeout=60)
    line = one_error_line(proc)
    assert "conl.gamma" in line and len(line) < 400   # the value quoted, cut at 200 characters


# -- Config input bounds: an alias bomb is refused before it can expand

def _bomb(levels: int, key: str) -> str:
    """A YAML file whose ``key`` expands to 9**levels leaves through nested aliases."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    section, name = key.split(".")
    body = "\n".join(f"    {line}" for line in lines)
    return f"{section}:\n  {name}:\n{body}\n" if name == "search_space" else \
        "anchors:\n" + "\n".join(f"  {line}" for line in lines) + f"\n{section}:\n  {name}: *a{levels - 1}\n"


@pytest.mark.parametrize("key", ["data.target_langs", "tune.search_space"])
def test_an_alias_bomb_of_9_to_the_9_leaves_is_refused_in_2_s_under_200_mb(key, tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(_bomb(9, key))
    proc, kb, seconds = peak(["conlst_ray.run", "--config", str(config)], tmp_path)
    line = one_error_line(proc)
    assert "aliases" in line and "line " in line
    assert seconds < 2.0, seconds
    assert kb * 1024 < 200e6, kb


# -- One check of a model folder, for every entry point: a damaged folder is one line, rc 2

def _no_tensors(folder: Path) -> None:
    """A valid safetensors file that holds no tensors (only metadata)."""
    from safetensors.torch import save_file

    save_file({}, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _header_lists_none(folder: Path) -> None:
    """The same file size, a header rewritten to list no tensors."""
    import json
    import struct

    raw = (folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode().ljust(n, b" ")
    (folder / "model.safetensors").write_bytes(raw[:8] + header + raw[8 + n:])


def _another_models_weights(folder: Path, other: Path) -> None:
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())


def _damaged_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "truncation": null}')


DAMAGE = {"bytes appended": (append_bytes, "bytes appended"), "no tensors": (_no_tensors, "hold no tensors"),
          "a header listing none": (_header_lists_none, "hold no tensors"),
          "another model's weights": (_another_models_weights, "do not fit its config.json"),
          "a damaged tokenizer.json": (_damaged_tokenizer, "tokenizer.json cannot be read")}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, mbert_tokenizer):
    """A saved pair classifier and one of another shape (four labels)."""
    from test_hf_predict import trained_like

    root = tmp_path_factory.mktemp("models")
    return (trained_like(root, mbert_tokenizer),
            trained_like(root / "other", mbert_tokenizer, labels=("a", "b", "c", "d")))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_model_folder_is_one_line_in_predict_evaluate_load_model_and_the_auto_classes(case, two_models,
                                                                                                  tmp_path, capsys):
    import shutil

    from conlst_ray.api import load_model
    from conlst_ray.models.model_files import ModelError

    model, other = two_models
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    damage, said = DAMAGE[case]
    damage(folder, other) if damage is _another_models_weights else damage(folder)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"premise": "a cat", "hypothesis": "a cat", "label": "entailment"}\n')
    spec = f"jsonl:{corpus}"
    predicting = ["--corpus", spec, "--out", str(tmp_path / "out.csv")]
    if case == "bytes appended":  # a real process once; the others through the same guarded path, here
        line = one_error_line(cli("predict", str(folder), *predicting))
        assert str(folder) in line and said in line, line
    from conlst_ray.commands import evaluate, predict

    for main, args in ((predict.main, [str(folder), *predicting]),
                       (evaluate.main, [str(folder), "--corpus", spec, "--langs", "xx"])):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {folder}: ") and said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ModelError, match=said):
        load_model(folder)
    from transformers import AutoModelForSequenceClassification

    import conlst_ray.hf  # noqa: F401

    with pytest.raises(ModelError, match=said):
        AutoModelForSequenceClassification.from_pretrained(folder)


# -- Caches that cannot lie, and damaged stages redone: one finished run, copies of it damaged by real
#    commands in the background (tests/battery_job.py)

def ok(proc: dict) -> dict:
    assert proc["rc"] == 0 and "Traceback" not in proc["stderr"], proc["stderr"][-3000:]
    return proc


def said(proc: dict, *words) -> list[str]:
    return [line for line in proc["stdout"].splitlines() if all(w in line for w in words)]


@pytest.mark.slow
def test_damaged_caches_are_rebuilt_said_so_and_the_results_equal_an_undamaged_runs(battery_runs):
    """A token file zeroed in place (same size: read silently before), a token
    file cut short, a pseudo-label shard and a corpus shard deleted: the
    --resume rebuilds each, says so in one line each, retrains nothing, and
    writes the same result tables as the undamaged run."""
    ok(battery_runs["finished"])
    seen = ok(battery_runs["caches"])
    assert len(said(seen, "[tokenize] near", "changed since it was written", "again")) == 1, seen["stdout"]
    assert len(said(seen, "[tokenize] far", "100 bytes", "again")) == 1, seen["stdout"]
    assert len(said(seen, "[pseudo_labels]", "lang=far/shard-00000.parquet is missing")) == 1, seen["stdout"]
    assert len(said(seen, "[ingest] near", "shard-00000.parquet is missing", "rebuilding")) == 1, seen["stdout"]
    assert {s: seen["after"][s] == seen["before"][s] for s in ("source", "conl", "ssl")} == {
        "source": True, "conl": True, "ssl": True}                      # nothing retrained
    assert seen["after"]["pseudo_labels"] != seen["before"]["pseudo_labels"]  # its missing shard redone
    assert seen["tables"] == battery_runs["finished"]["tables"]


@pytest.mark.slow
def test_a_model_with_bytes_appended_is_damaged_not_changed_and_recompute_never_crashes(battery_runs):
    """Bytes appended to CoNL's weights (unloadable): --resume trains it
    again with the stage after it, and keeps the ones before (it refused,
    calling the model "changed", before); --recompute on a damaged stage
    removes and redoes it."""
    seen = battery_runs["bytes_appended"]
    first = ok(seen["resume"])
    assert len(said(first, "[conl]", "bytes appended", "training it again")) == 1, first["stdout"]
    assert {s: seen["after"][s] != seen["before"][s] for s in seen["before"]} == {
        "source": False, "pseudo_labels": False, "conl": True, "ssl": True}
    again = ok(seen["recompute"])
    assert len(said(again, "[ssl]", "bytes appended", "training it again")) == 1, again["stdout"]


@pytest.mark.slow
def test_report_rebuilds_a_deleted_corpus_folder_and_refuses_a_busy_run(battery_runs):
    seen = battery_runs["report"]
    ok(seen["rebuilt"])
    assert seen["rebuilt"]["tables"] == battery_runs["finished"]["tables"]
    busy = seen["busy"]
    line = one_error_line(subprocess.CompletedProcess([], busy["rc"], busy["stdout"], busy["stderr"]))
    assert f"in use by process {busy['holder']}" in line and "results" in line
    assert seen["results_unchanged"]
    reading = ok(seen["predict"])  # a read-only command goes on, and says what it reads
    assert f"[predict] run {Path(seen['rebuilt']['run'])} is in progress (process {busy['holder']}" in reading["stderr"]


# -- The API calls the library: no stderr to scrape, the command's own line in the exception

@pytest.mark.slow
def test_the_api_resumes_a_run_in_a_plain_python_process(battery_runs):
    """A plain interpreter (no pytest, no faulthandler: the API's stderr
    capture broke ray.init there): a resume through the API finishes and
    says where everything is."""
    seen = ok(battery_runs["api"])
    result = seen["result"]
    assert result["model"] == str(Path(seen["run"]) / "model") and result["stage"]
    assert result["seconds"] == ["conl", "pseudo_labels", "source", "ssl"]
    assert {"zero-shot", "CoNL", "CoNLST"} <= set(result["models"]) <= set(result["test"])
    assert seen["tables"] == battery_runs["finished"]["tables"]


@pytest.mark.slow
def test_a_failing_library_run_raises_the_line_the_command_prints(battery_runs, ray_session):
    """A stale run directory (refused once Ray is up and the run directory
    is checked): the API's RunError carries exactly the command's one line.
    (A bad value, refused as the config is read: test_hf_predict.)"""
    from battery_job import RUN

    from conlst_ray.api import RunError, run

    copy = Path(battery_runs["stale"]["run"])
    args = [*RUN, f"output_dir={copy.parent}", "conl.gamma=0.5"]
    line = one_error_line(cli("run", *args, "--resume"))
    with pytest.raises(RunError) as failed:
        run(overrides=dict(a.split("=", 1) for a in args), resume=True)
    assert failed.value.reason == line[len("error: "):]
    assert "made with other settings" in failed.value.reason and "conl.gamma 0.9 -> 0.5" in failed.value.reason


# -- A full disk where pyarrow writes: the one line names the file

WRITE_PARQUET = """
import sys
import numpy as np, pyarrow as pa
from pathlib import Path
from conlst_ray.commands.common import guarded
from conlst_ray.ray_jobs.corpus_cache import write_parquet_atomic

def main(argv):
    table = pa.table({"x": np.random.default_rng(0).random(200_000)})  # 1.6 MB: more than the disk
    write_parquet_atomic(table, Path(argv[0]) / "lang=xx" / "shard-00000.parquet")
    return 0

sys.exit(guarded(main, sys.argv[1:]))
"""


@pytest.mark.skipif(not __import__("helpers").private_mounts(), reason="needs unshare -rm to mount a small tmpfs")
def test_a_full_disk_under_pyarrow_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path):
    import shlex

    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=256k tmpfs {disk} || exit 99\n"
              f"{shlex.join([sys.executable, '-c', WRITE_PARQUET, str(disk)])}; rc=$?\n"
              f"ls -A {disk}/lang=xx > {tmp_path / 'left'}; exit $rc\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    line = one_error_line(proc)
    assert f"no space left on the device writing {disk}/lang=xx/shard-00000.parquet" in line, line
    assert (tmp_path / "left").read_text().strip() == ""  # no half-written file, no temporary


# -- predict streams: its memory does not grow with the corpus

@pytest.mark.slow
def test_predict_over_200000_rows_uses_at_most_1_2_times_its_memory_over_20000(battery_runs):
    seen = battery_runs["predict"]
    for n in (20_000, 200_000):
        ok(seen[n])
        assert seen[n]["lines"] == n + 1  # every row, and the header
    assert seen[200_000]["kb"] <= 1.2 * seen[20_000]["kb"], {n: seen[n]["kb"] for n in seen}
