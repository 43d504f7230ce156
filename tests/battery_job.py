"""The battery's end-to-end scenarios (tests/test_battery.py) as one
background job (background.py): a whole run, then copies of it damaged the
stated ways and resumed or reported by real commands, the API resuming one
in a plain interpreter, and predict over 20,000 and 200,000 rows. Each
scenario records what its test asserts on; nothing is asserted here."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from background import RUNNER

REPO = Path(__file__).resolve().parents[1]
RUN = ["data.synthetic.n_source_train=240", "data.synthetic.n_unlabelled=60", "data.synthetic.n_dev=30",
       "data.synthetic.n_test=30", "data.target_langs=[near,far]", "source.epochs=1", "ssl.iterations=1",
       "resources.num_workers=0", "data.eval_during_training=false", "run_name=r"]
STAGES = ("source", "pseudo_labels", "conl", "ssl")

# the command run as __main__, then its own peak memory (VmHWM: after exec, unlike ru_maxrss, which keeps
# the forking parent's peak) and CPU seconds written to the file named by argv[1]
PEAK = ("import resource, runpy, sys\nout = sys.argv.pop(1)\nmodule = sys.argv.pop(1)\n"
        "try:\n    runpy.run_module(module, run_name='__main__')\n"
        "finally:\n    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    use = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    open(out, 'w').write(f'{peak} {use.ru_utime + use.ru_stime}')\n")

API_RESUME = """
import json, sys
from conlst_ray import run
overrides = dict(a.split("=", 1) for a in sys.argv[1:])
result = run(overrides=overrides, resume=True)
print("RESULT", json.dumps({"model": str(result.model), "stage": result.stage, "seconds": sorted(result.seconds),
                            "models": sorted(result.models), "test": sorted(result.accuracy.get("test", {}))}))
"""


def command(*args, timeout: float = 300) -> dict:
    proc = RUNNER.run([sys.executable, *args], timeout=timeout, cwd=REPO)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def conlst(module: str, *args, timeout: float = 300) -> dict:
    return command("-m", f"conlst_ray.{module}", *args, timeout=timeout)


def tables(run: Path) -> dict:
    """The report's result tables (markdown and CSV), by name; not the stage
    costs (seconds: they differ between any two runs)."""
    return {p.name: p.read_text() for p in sorted((run / "results").glob("*.*"))
            if p.suffix in (".md", ".csv") and not p.name.startswith("stage_costs")}


def done_stamps(run: Path) -> dict:
    return {s: (run / s / "DONE.json").stat().st_mtime_ns for s in STAGES}


def copy_of(run: Path, folder: Path) -> Path:
    shutil.copytree(run, folder / "r", symlinks=True)
    return folder / "r"


def resume(copy: Path, *extra) -> dict:
    return conlst("run", *RUN, f"output_dir={copy.parent}", "--resume", *extra)


def append_bytes(model: Path) -> None:
    with open(model / "model.safetensors", "ab") as fh:
        fh.write(b"\0" * 64)


@RUNNER.register("battery_runs", lane=1)
def battery_runs(out: Path) -> dict:
    made = conlst("run", *RUN, f"output_dir={out / 'finished'}")
    run = out / "finished" / "r"
    if made["rc"] != 0:
        return {"finished": made}
    return {"finished": {**made, "run": str(run), "tables": tables(run)}, "caches": damaged_caches(run, out / "a"),
            "bytes_appended": bytes_appended(run, out / "b"), "report": report_cases(run, out / "c"),
            "api": api_resume(out / "a" / "r"), "stale": {"run": str(copy_of(run, out / "e"))},
            "predict": predict_memory(out / "f")}


def damaged_caches(run: Path, folder: Path) -> dict:
    """A token file zeroed in place, one cut short, a pseudo-label shard and
    a corpus shard deleted; then --resume."""
    copy = copy_of(run, folder)
    before = done_stamps(copy)
    tokens = next((copy / "corpus" / "target_train").glob("tokens-*"))
    zeroed, cut = tokens / "lang=near" / "shard-00000.arrow", tokens / "lang=far" / "shard-00000.arrow"
    zeroed.write_bytes(bytes(zeroed.stat().st_size))
    cut.write_bytes(cut.read_bytes()[:100])
    (copy / "pseudo_labels" / "source" / "lang=far" / "shard-00000.parquet").unlink()
    (copy / "corpus" / "test_target" / "lang=near" / "shard-00000.parquet").unlink()
    proc = resume(copy)
    return {**proc, "before": before, "after": done_stamps(copy), "tables": tables(copy)}


def bytes_appended(run: Path, folder: Path) -> dict:
    """Bytes appended to CoNL's model weights, then --resume; to the last
    stage's, then --resume --recompute."""
    copy = copy_of(run, folder)
    before = done_stamps(copy)
    append_bytes(copy / "conl" / "model")
    first = resume(copy)
    after = done_stamps(copy)
    append_bytes(copy / "ssl" / "model")
    return {"resume": first, "before": before, "after": after, "recompute": resume(copy, "--recompute")}


def report_cases(run: Path, folder: Path) -> dict:
    """report on a run whose corpus folder is gone; then on a run another
    (live) process holds."""
    copy = copy_of(run, folder)
    shutil.rmtree(copy / "corpus")
    rebuilt = conlst("report", str(copy))
    holder = RUNNER.popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (copy / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                "started": time.time()}))
        before = {p.name: p.stat().st_mtime_ns for p in (copy / "results").iterdir()}
        busy = conlst("report", str(copy))
        after = {p.name: p.stat().st_mtime_ns for p in (copy / "results").iterdir()}
        corpus = folder / "pairs.jsonl"
        corpus.write_text(json.dumps({"premise": "a b", "hypothesis": "a"}) + "\n")
        reading = conlst("predict", str(copy / "model"), "--corpus", f"jsonl:{corpus}", "--out", str(folder / "o.csv"))
    finally:
        RUNNER.kill(holder)
    return {"rebuilt": {**rebuilt, "tables": tables(copy), "run": str(copy)}, "busy": {**busy, "holder": holder.pid},
            "results_unchanged": before == after, "predict": reading}


def api_resume(copy: Path) -> dict:
    """A resume through the API in a plain interpreter (no pytest, no
    faulthandler), of the copy whose caches were rebuilt: every stage done."""
    proc = command("-c", API_RESUME, *RUN, f"output_dir={copy.parent}")
    line = next((x for x in proc["stdout"].splitlines() if x.startswith("RESULT ")), "RESULT {}")
    return {**proc, "run": str(copy), "result": json.loads(line[len("RESULT "):]), "tables": tables(copy)}


def predict_memory(folder: Path) -> dict:
    """predict's peak memory over 20,000 and 200,000 rows of one tiny model."""
    folder.mkdir(parents=True)
    from conftest import SHARED_DATA

    vocab = SHARED_DATA / "vocab" / "bert-base-multilingual-cased-vocab.txt"
    made = command("-c", "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; "
                         "from conlst_ray.models.encoder import wordpiece_tokenizer; "
                         "from test_hf_predict import trained_like; "
                         f"print(trained_like(Path('{folder}'), wordpiece_tokenizer(Path('{vocab}'))))")
    if made["rc"] != 0:
        return {"made": made}
    model = made["stdout"].strip().splitlines()[-1]
    runs = {}
    for n in (20_000, 200_000):
        corpus = folder / f"c{n}.jsonl"
        with open(corpus, "w") as fh:
            fh.writelines(json.dumps({"premise": f"the cat {i} sat on a mat", "hypothesis": "a cat sat"}) + "\n"
                          for i in range(n))
        peak, output = folder / f"peak{n}", folder / f"out{n}.csv"
        proc = command("-c", PEAK, str(peak), "conlst_ray.predict", model, "--corpus", f"jsonl:{corpus}",
                       "--out", str(output), timeout=600)
        kb = int(peak.read_text().split()[0]) if peak.is_file() else 0
        lines = sum(1 for _ in open(output)) if output.is_file() else 0
        runs[n] = {**proc, "kb": kb, "lines": lines}
        corpus.unlink()
    return runs


def peak(cmd: list[str], folder: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess, int, float]:
    """(the process, its peak resident memory in kB, its CPU seconds: not wall
    time, which a busy machine stretches) of ``python -m cmd[0] cmd[1:]``, here."""
    out = folder / "peak"
    proc = subprocess.run([sys.executable, "-c", PEAK, str(out), *cmd], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    kb, seconds = out.read_text().split()
    return proc, int(kb), float(seconds)
