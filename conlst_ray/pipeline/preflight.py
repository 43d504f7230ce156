"""Checks before any work starts: every corpus spec of a run resolved and its
first rows read, every model path and checkpoint looked at, the translation
model's language coverage, the output folder writable. Seconds, on the
driver, no Ray; all problems are reported together, each naming its key.

Without this, a bad target corpus or an empty ``model.source_checkpoint``
surfaces only after source training and pseudo-labelling (minutes to hours
on real data), as an error from deep inside a Ray job.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

from conlst_ray import quiet
from conlst_ray.config import NAMED_MODELS, Config
from conlst_ray.config.keys import get, keys
from conlst_ray.data.corpora import read_options
from conlst_ray.data.readers import check_language_template, parse_spec, read_corpus
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import Task

log = logging.getLogger(__name__)

PREVIEW_ROWS = 3


class UserError(ValueError):
    """Something the user can fix (a path, a key); the message says what."""


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else with a slash is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _hub_id(name: str) -> bool:
    """A name the hub would be asked for: no model conlst_ray names itself,
    nothing on this disk, nothing shaped like a path."""
    return name not in NAMED_MODELS and not os.path.exists(os.path.expanduser(name)) and not _looks_like_path(name)


def problems_line(problems: list[str], hint: str = "") -> str:
    """Every problem in one line: the first, then how many more and which."""
    more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
    return problems[0] + more + hint


def check_model(key: str, name: str | None, need_weights: bool = False) -> list[str]:
    """A local folder must hold a model (config.json, and weights where
    ``need_weights``); a hub id is checked for its form only (the network is
    not asked here)."""
    if not name or name in NAMED_MODELS:
        return []
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not path.is_dir():
            return [f"{key}: {name} is a file, not a model folder"]
        if not (path / "config.json").is_file():
            return [f"{key}: {name} holds no model (config.json missing)"]
        weights = [f for f in path.iterdir() if f.suffix in (".safetensors", ".bin")]
        if need_weights and not weights:
            return [f"{key}: {name} holds no weights (*.safetensors or *.bin)"]
        return []
    if _looks_like_path(name):
        return [f"{key}: {name} does not exist"]
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # noqa: BLE001 -- its own message is about repo ids, ours names the key
        return [f"{key}: {name!r} is neither an existing folder nor a hub id (owner/name)"]
    return []


def check_checkpoint_labels(cfg: "Config") -> list[str]:
    """A fine-tuned source checkpoint must classify the task's labels: a
    3-class NLI model given to a 2-class task would fail only at load time
    (or, worse, with matching sizes, train on the wrong meaning of each id)."""
    if not cfg.model.source_checkpoint or not Path(cfg.model.source_checkpoint).is_dir():
        return []
    from conlst_ray.models.model_files import read_meta

    saved = read_meta(cfg.model.source_checkpoint)
    if not saved:
        return []
    labels = list(cfg.data.task.labels)
    named = saved.get("task", {}).get("labels")
    if saved.get("num_labels") != len(labels) or (named or labels) != labels:
        return [f"model.source_checkpoint: {cfg.model.source_checkpoint} classifies "
                f"{named or str(saved.get('num_labels')) + ' classes'} but data.task.labels is {labels}"]
    return []


def check_corpora(cfg: "Config") -> list[str]:
    """Read the first rows of every corpus the run reads, for every language
    it reads it in (hub data sets and the embedded benchmark are checked for
    their form only)."""
    d = cfg.data
    jobs = [(key.name, get(cfg, key.name), d.corpus_langs(key.name)) for key in keys(Config) if key.path == "corpus"]
    if cfg.selection.prior == "bbse":  # the prior is estimated on the corpus's source-language rows
        jobs.append(("data.target_train (selection.prior=bbse reads its source-language rows)", d.target_train,
                     [d.source_lang]))
    problems = []
    for key, spec, langs in jobs:
        if not spec:
            continue
        try:
            fmt, _ = parse_spec(spec)
        except Exception as exc:  # noqa: BLE001 -- reported with the key
            problems.append(f"{key}: {exc}")
            continue
        if fmt == "synthetic":  # generated: its languages are the benchmark's
            problems += synthetic_languages(cfg, key, spec, langs)
            continue
        if fmt == "hf":  # remote: checked for its form only
            continue
        try:
            check_language_template(spec, langs, key, Task.of(d.task))
        except CorpusError as exc:
            problems.append(str(exc))
            continue
        for lang in langs:
            try:
                table, _ = read_corpus(spec, lang, **read_options(d, PREVIEW_ROWS))
                if table.num_rows == 0:
                    problems.append(f"{key}: {spec.replace('{lang}', lang)} has no rows for language {lang!r}")
            except Exception as exc:  # noqa: BLE001 -- a corpus error already names file and line
                problems.append(f"{key} ({lang}): {exc}")
                break  # one language's error says what is wrong with the spec
    return problems


def synthetic_languages(cfg: "Config", key: str, spec: str, langs: list) -> list[str]:
    """A language the embedded benchmark does not generate, named with its key."""
    from conlst_ray.data.synthetic import SyntheticBenchmark

    known = SyntheticBenchmark.from_config(cfg.data.synthetic, cfg.data.task).languages
    unknown = [lang for lang in langs if lang not in known]
    if not unknown:
        return []
    return [f"{key}: {spec} has no language {unknown[0]!r}; the embedded benchmark has {list(known)}"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """One connection attempt to the Hugging Face hub (``HF_ENDPOINT``)."""
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_ids(cfg: "Config") -> list[tuple[str, str]]:
    """(key, hub id) of every model and data set the run would fetch from the hub."""
    out = []
    for key in keys(Config):
        value = get(cfg, key.name)
        if not value:
            continue
        if key.path == "model" and not value.endswith(".txt") and _hub_id(value):
            out.append((key.name, value))
        elif key.path == "corpus" and value.startswith("hf:"):
            out.append((key.name, value[3:].split(":")[0]))
    return out


def check_hub(cfg: "Config") -> list[str]:
    """Checked once: offline, the hub libraries retry for most of a minute
    per id. Unreachable -> offline mode for this process and its Ray workers
    (cached ids load at once), and an id that is not cached is refused."""
    wanted = hub_ids(cfg)
    if not wanted or os.environ.get("HF_HUB_OFFLINE") == "1" or hub_reachable():
        return []
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    from huggingface_hub import scan_cache_dir

    try:
        cached = {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # noqa: BLE001 -- no cache folder yet
        cached = set()
    return [f"{key}: {repo} is not in the local Hugging Face cache and the hub cannot be reached (offline)"
            for key, repo in wanted if repo not in cached]


def check_translation(cfg: "Config") -> list[str]:
    if not (cfg.ssl.enabled and cfg.ssl.use_backtranslation and cfg.translation.model):
        return []
    from conlst_ray.models.translation import TranslationConfigError, check_coverage

    try:
        from conlst_ray.ray_jobs.translate import resolve_family

        with quiet():  # the warning is the translation stage's to print, once
            check_coverage(resolve_family(cfg.translation), cfg.data.target_langs, cfg.translation.on_uncovered)
    except TranslationConfigError as exc:
        return [f"translation.model: {exc}"]
    return []


def writable_dir_problem(key: str, path: str | os.PathLike) -> str | None:
    """Why directory ``path`` could not be created and written, checked
    without creating anything (a failed preflight leaves no folder behind)."""
    p = Path(os.path.expanduser(str(path))).absolute()
    if p.exists() and not p.is_dir():
        return f"{key}: {p} is a file, not a folder"
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}: {p} cannot be created ({existing} is a file)"
    try:  # a real probe: root passes os.access everywhere, /proc refuses all the same
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".conlst-preflight-"))
    except OSError as exc:
        return f"{key}: {p} cannot be created or written ({existing}: {exc.strerror or exc})"
    return None


def check_output(cfg: "Config") -> list[str]:
    from conlst_ray.storage import mirror as storage

    if storage.is_uri(cfg.output_dir):
        problem = storage.write_problem("output_dir", cfg.output_dir)
    else:
        problem = writable_dir_problem("output_dir", cfg.output_dir)
    return [problem] if problem else []


def check_shared_output(cfg: "Config", timeout_s: float = 60.0) -> None:
    """On a multi-node cluster a local ``output_dir`` must be one every node
    sees (a shared filesystem): the driver writes a marker there and a task
    on every node looks for it. Refused in one line otherwise -- a worker on
    another node would open paths that exist only here."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from conlst_ray.storage import mirror as storage

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or storage.is_uri(cfg.output_dir):
        return
    root = Path(cfg.output_dir)
    while not root.is_dir():  # the run will be created here: its nearest existing folder says where it lives
        root = root.parent
    marker = root / f".conlst-shared-{uuid.uuid4().hex}"
    marker.write_text("written by the driver; removed after the check")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
        refs = {f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        blind = [addr for addr, ref in refs.items() if ref not in ready or not ray.get(ref)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise UserError(f"output_dir = {cfg.output_dir}: a local folder that node(s) {', '.join(blind)} of this "
                        f"{len(nodes)}-node cluster do not see; give object storage (output_dir=s3://bucket/prefix) "
                        f"or a folder every node mounts")


def check_lengths(cfg: "Config") -> list[str]:
    """data.max_length within the positions of the model that will read it."""
    from conlst_ray.models.model_files import max_text_length

    # the checkpoint, when given, is the model that reads the text; tiny-bert is checked with its config
    key = "model.source_checkpoint" if cfg.model.source_checkpoint else "model.name_or_path"
    name = get(cfg, key)
    limit = max_text_length(name) if name != "tiny-bert" else None
    if limit is not None and cfg.data.max_length > limit:
        return [f"data.max_length = {cfg.data.max_length} is longer than the {limit} positions of {key} ({name})"]
    return []


def check_cache_dir(cfg: "Config") -> list[str]:
    """multilingual-e5-small is converted into model.cache_dir on first use."""
    if cfg.model.name_or_path != "multilingual-e5-small" or cfg.model.source_checkpoint:
        return []
    from conlst_ray.models.e5 import e5_cache_dir

    problem = writable_dir_problem("model.cache_dir", cfg.model.cache_dir or e5_cache_dir())
    return [problem] if problem else []


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (AVX-512 BF16 or AMX): without it bf16
    autocast is emulated, slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(cfg: "Config") -> list[str]:
    """resources.precision=bf16 on a CPU run needs native bf16."""
    if cfg.resources.precision != "bf16" or cfg.resources.use_gpu or cpu_has_bf16():
        return []
    return ["resources.precision=bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 runs slower "
            "than fp32; set resources.precision=fp32 (or auto)"]


def transductive_warning(cfg: "Config") -> str | None:
    """One line when the scored test corpus is the unlabelled target text
    itself: its figures would be transductive (rows trained on are scored)."""
    d = cfg.data
    if d.target_test and d.target_train and d.target_test == d.target_train:
        return (f"[run] warning: data.target_test is the same corpus as data.target_train ({d.target_test}): "
                f"its scores are transductive (the unlabelled rows trained on are the rows scored)")
    return None


def overlap_warning(cfg: "Config") -> str | None:
    """One line when the source dev set that judges the stages reads the
    same rows of the same corpus as the unlabelled target text: in a
    row-aligned translated corpus (XNLI dev) its rows are the originals of
    the rows self-training trains on, which flatters the label-free signal."""
    d = cfg.data
    same = d.source_dev and d.target_train and d.source_dev.replace("{lang}", d.source_lang) == \
        d.target_train.replace("{lang}", d.source_lang)
    if not same or cfg.model.source_checkpoint:
        return None
    if d.max_rows is not None and d.source_dev_skip_rows >= d.max_rows:
        return None
    last = "all" if d.max_rows is None else f"0-{d.max_rows - 1}"
    return (f"[run] warning: data.source_dev reads rows {d.source_dev_skip_rows}- of {d.source_dev}, the corpus whose "
            f"rows {last} are the unlabelled text: in a row-aligned translation (XNLI dev) they are the originals "
            f"of the rows trained on; set data.source_dev_skip_rows={d.max_rows or 'N'} (and data.max_rows)")


def resource_problems(cfg: "Config", cluster: dict) -> list[str]:
    """What the run asks of the cluster that the cluster does not have
    (``cluster``: Ray's resource totals). A training worker, an inference
    actor or a translation actor that cannot be placed would wait forever."""
    r, problems = cfg.resources, []
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    workers = max(1, r.num_workers)
    if r.use_gpu and gpus < workers:
        problems.append(f"resources.use_gpu=true asks for {workers} GPU(s), one per training worker "
                        f"(resources.num_workers={r.num_workers}), but the cluster has {gpus:g}")
    if r.num_workers * r.cpus_per_worker > cpus:
        problems.append(f"resources.num_workers={r.num_workers} x resources.cpus_per_worker={r.cpus_per_worker:g} "
                        f"= {r.num_workers * r.cpus_per_worker:g} CPUs, but the cluster has {cpus:g}")
    if r.cpus_per_actor > cpus:
        problems.append(f"resources.cpus_per_actor={r.cpus_per_actor:g}: an inference actor needs more CPUs than "
                        f"the cluster's {cpus:g}")
    if r.gpus_per_actor > gpus:
        problems.append(f"resources.gpus_per_actor={r.gpus_per_actor:g}: the cluster has {gpus:g} GPUs")
    t = cfg.translation
    if t.model and cfg.ssl.use_backtranslation and t.gpus_per_actor > gpus:
        problems.append(f"translation.gpus_per_actor={t.gpus_per_actor:g}: the cluster has {gpus:g} GPUs")
    return problems


def check_resources(cfg: "Config", cluster: dict) -> None:
    """Refuse (one line naming the key) what the cluster cannot give, or,
    with ``resources.wait_for_resources``, say what the run will wait for."""
    problems = resource_problems(cfg, cluster)
    if not problems:
        return
    if cfg.resources.wait_for_resources:
        log.info(f"[run] waiting for resources the cluster does not have yet: {'; '.join(problems)}")
        return
    raise UserError(problems_line(problems, "; on an autoscaling cluster set resources.wait_for_resources=true"))


def preflight(cfg: "Config") -> None:
    """Raise one UserError listing every problem found, or return."""
    problems = check_output(cfg)
    problems += check_model("model.name_or_path", cfg.model.name_or_path)
    if cfg.model.tokenizer and not cfg.model.tokenizer.endswith(".txt"):
        problems += check_model("model.tokenizer", cfg.model.tokenizer)
    elif cfg.model.tokenizer and not Path(cfg.model.tokenizer).is_file():
        problems.append(f"model.tokenizer: vocabulary file {cfg.model.tokenizer} not found")
    problems += check_model("model.source_checkpoint", cfg.model.source_checkpoint, need_weights=True)
    problems += check_hub(cfg)
    problems += check_checkpoint_labels(cfg)
    problems += check_lengths(cfg)
    problems += check_cache_dir(cfg)
    problems += check_precision(cfg)
    problems += check_corpora(cfg)
    problems += check_translation(cfg)
    if problems:
        raise UserError(problems_line(problems))
    for warning in (transductive_warning(cfg), overlap_warning(cfg)):
        if warning:
            log.warning(warning)
