"""Run artefacts in object storage, each node working on a local mirror.

``output_dir`` may be a pyarrow filesystem URI (``s3://bucket/prefix``,
``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``, ``gs://...``).
Then every process -- the driver, a Ray task, an actor, a training worker, on
any node -- works on its own node-local mirror of the run directory:

    <cache root>/conlst-storage/<quoted scheme://bucket?query>/<key in the bucket>

and moves files between the mirror and storage at the edges of each step:
``fetch(path)`` before reading (a file or a whole folder; a local copy is
reused only while its size and modification time equal the stored object's,
so nothing stale is read), ``publish(path)`` after writing. The algorithm code
keeps plain local paths and memory-maps its token files as on one machine.

A mirror path names its storage in one path component, so a path the driver
passes to a worker on another node still says where its bytes live; the
worker re-roots it under its own cache root (``CONLST_RAY_CACHE_DIR``, else
``~/.cache/conlst_ray``) and never opens the driver's copy. Secrets do not
belong in the URI (it appears in paths and logs): pyarrow reads credentials
from the usual environment variables and instance roles.

With a local ``output_dir`` every function here is the identity or a no-op:
one machine (or a shared filesystem) behaves exactly as before.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

MARK = "conlst-storage"
CACHE_ENV = "CONLST_RAY_CACHE_DIR"
LOG_ENV = "CONLST_RAY_STORAGE_LOG"  # a file: every fetch/publish appends "pid op local-path" (tests audit it)


# query parameters pyarrow's filesystems take credentials from
CREDENTIAL_PARAMS = {"access_key", "secret_key", "session_token", "password", "token", "credential", "sas_token",
                     "account_key", "client_secret"}


class CredentialsInURI(ValueError):
    """A storage URI that carries a secret (it would be printed and stored)."""


def is_uri(location: str | os.PathLike | None) -> bool:
    return "://" in str(location or "")


# anywhere in a text: the user info of a URI (scheme://USER:SECRET@host) and a secret query parameter
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<userinfo>[^/?#@\s'\"]+)@")
_SECRET_PARAM = re.compile(r"(?P<name>[?&;](?:" + "|".join(sorted(CREDENTIAL_PARAMS)) + r")=)(?P<value>[^&#\s'\"]*)",
                           re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` (a config value, an error line, a traceback) with every
    credential of every URI in it replaced by ``***``, wherever the URI
    sits: a bare URI, a corpus spec (``parquet:s3://KEY:SECRET@bucket/x``),
    a path quoted in a message."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", str(text))
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}***", text)


def credentials_problem(key: str, location) -> str | None:
    """One line naming ``key`` when ``location`` holds a URI with credentials
    in it (the secret masked); None otherwise."""
    if not isinstance(location, str) or (shown := mask_secrets(location)) == location:
        return None
    return (f"{key} = {shown!r} carries credentials, which would be printed and stored with the run: remove "
            f"them and give them as pyarrow reads them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile "
            f"in ~/.aws, an instance role)")


def join(location: str, *parts: str) -> str:
    """``location``/parts, for a path or a URI (parts go before its ``?query``)."""
    if not is_uri(location):
        return str(Path(location, *parts))
    head, sep, query = location.partition("?")
    return "/".join([head.rstrip("/"), *parts]) + sep + query


def cache_root() -> Path:
    """This node's cache root: where it mirrors object storage."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "conlst_ray").expanduser()


def mirror(location: str | os.PathLike) -> Path:
    """The local path of ``location``: a URI's mirror on this node, or the
    (local) path itself."""
    location = str(location)
    if not is_uri(location):
        return Path(location)
    problem = credentials_problem("storage URI", location)
    if problem:
        raise CredentialsInURI(problem)
    parts = urlsplit(location)
    return _mirror_path(f"{parts.scheme}://{parts.netloc}" + (f"?{parts.query}" if parts.query else ""),
                        parts.path.strip("/"))


def _mirror_path(base: str, key: str) -> Path:
    """This node's mirror of ``key`` in the storage at ``base`` (scheme://bucket?query)."""
    return cache_root() / MARK / quote(base, safe="") / key


def _split(path: str | os.PathLike) -> tuple[str, str] | None:
    """(storage base URI, key below it) of a mirror path; None for a plain local path."""
    parts = Path(path).parts
    if MARK not in parts:
        return None
    i = parts.index(MARK)
    if i + 1 >= len(parts):
        return None
    return unquote(parts[i + 1]), "/".join(parts[i + 2:])


def here(path: str | os.PathLike) -> Path:
    """``path`` (a mirror path made on any node) under this node's cache root."""
    split = _split(path)
    return Path(path) if split is None else _mirror_path(*split)


def is_remote(path: str | os.PathLike) -> bool:
    return _split(path) is not None


def location(path: str | os.PathLike) -> str:
    """Where ``path`` lives, as a user names it: the storage URI of a mirror
    path (``s3://bucket/runs/r/ssl/model?...``), else the path."""
    split = _split(path)
    if split is None:
        return str(path)
    parts = urlsplit(split[0])
    key = "/".join(p for p in (parts.path.strip("/"), split[1]) if p)
    return f"{parts.scheme}://{parts.netloc}/{key}" + (f"?{parts.query}" if parts.query else "")


def write_problem(key: str, uri: str) -> str | None:
    """None when an object can be written under ``uri`` and deleted again;
    else one line naming ``key`` (before any work starts)."""
    try:
        fs, probe = remote(mirror(join(uri, f".conlst-preflight-{uuid.uuid4().hex}")))
        with fs.open_output_stream(probe) as out:
            out.write(b"probe")
        fs.delete_file(probe)
    except Exception as exc:  # pyarrow raises OSError, ValueError, ArrowInvalid...: all mean "cannot write there"
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]  # whole: a cut word can hide the cause
        return f"{key} = {uri!r}: cannot write to this storage ({detail})"
    return None


@functools.lru_cache(maxsize=16)
def _filesystem(base: str):
    import pyarrow.fs as pafs

    fs, bucket = pafs.FileSystem.from_uri(base)
    return fs, bucket.strip("/")


def remote(path: str | os.PathLike):
    """(pyarrow filesystem, path inside it) of a mirror path, or None."""
    split = _split(path)
    if split is None:
        return None
    fs, bucket = _filesystem(split[0])
    return fs, "/".join(p for p in (bucket, split[1]) if p)


def _log(op: str, path: Path) -> None:
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {op} {path}\n")


def _infos(fs, key: str) -> list:
    """The stored files at ``key``: itself if a file, else everything below it."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(key)
    if info.type == pafs.FileType.File:
        return [info]
    if info.type == pafs.FileType.NotFound:
        return []
    return [i for i in fs.get_file_info(pafs.FileSelector(key, recursive=True)) if i.type == pafs.FileType.File]


def _same(local: Path, info) -> bool:
    try:
        st = local.stat()
    except FileNotFoundError:
        return False
    return st.st_size == info.size and int(st.st_mtime) == int(info.mtime.timestamp())


def fetch(path: str | os.PathLike, into: str | os.PathLike | None = None, names=None) -> Path:
    """This node's copy of ``path`` (a file or folder), downloaded where it
    is missing or differs from storage; the local path for a local run.
    ``into``: download a file to that path instead of the shared mirror
    (a reader that must not touch the copy a writer on this node appends to).
    ``names``: of a folder, only the files directly in it with these names."""
    local, where = (Path(into) if into else here(path)), remote(path)
    if where is None:
        return here(path)
    fs, key = where
    infos = _infos(fs, key)
    if names is not None:
        infos = [i for i in infos if i.path[len(key) + 1:] in names]
    _download(fs, key, infos, local)
    return local


def _download(fs, key: str, infos: list, local: Path) -> None:
    """The stored files ``infos`` (at or below ``key``) to ``local``, each
    unless its copy there has the object's size and time."""
    for info in infos:
        dst = local / info.path[len(key) + 1:] if info.path != key else local
        if _same(dst, info):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: two processes of this node may fetch the same file at once
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
        stamp = info.mtime.timestamp()
        os.utime(tmp, (stamp, stamp))
        tmp.replace(dst)
        _log("fetch", dst)


def files(folder: str | os.PathLike, pattern: str) -> list[Path]:
    """The files below ``folder`` whose relative path matches ``pattern``
    (sorted, as this node's paths). With object storage they are fetched
    first and the list is storage's: a file another node removed from
    storage is not read from a stale mirror."""
    where = remote(folder)
    if where is None:
        return sorted(Path(folder).glob(pattern))
    fs, key = where
    local = here(folder)
    infos = [i for i in _infos(fs, key) if fnmatch.fnmatchcase(i.path[len(key) + 1:], pattern)]
    _download(fs, key, infos, local)  # one listing: the files read are the files stored
    return sorted(local / i.path[len(key) + 1:] for i in infos)


def publish(path: str | os.PathLike) -> None:
    """Upload this node's copy of ``path`` (a file or folder) to storage; a
    no-op for a local run. Local copies take the stored objects' times, so a
    later ``fetch`` on this node downloads nothing."""
    local, where = here(path), remote(path)
    if where is None or not local.exists():
        return
    fs, key = where
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file() and
                                                   not p.name.endswith(".part") and not p.name.endswith(".tmp"))
    for f in files:
        dst = key if f == local else f"{key}/{f.relative_to(local).as_posix()}"
        with open(f, "rb") as src, fs.open_output_stream(dst) as out:
            shutil.copyfileobj(src, out, 1 << 22)
        stamp = fs.get_file_info(dst).mtime.timestamp()
        os.utime(f, (stamp, stamp))
        _log("publish", f)


def exists(path: str | os.PathLike) -> bool:
    """A file or folder at ``path`` (in storage for a remote run)."""
    where = remote(path)
    if where is None:
        return Path(path).exists()
    import pyarrow.fs as pafs

    fs, key = where
    return fs.get_file_info(key).type != pafs.FileType.NotFound


def listdir(path: str | os.PathLike) -> list[str]:
    """Names directly under folder ``path`` (sorted; [] if it is missing)."""
    where = remote(path)
    if where is None:
        return sorted(p.name for p in Path(path).iterdir()) if Path(path).is_dir() else []
    import pyarrow.fs as pafs

    fs, key = where
    if fs.get_file_info(key).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(key)))


def find(path: str | os.PathLike, name: str) -> list[Path]:
    """Every file called ``name`` below folder ``path`` (as this node's
    paths; the files themselves are not fetched)."""
    where = remote(path)
    if where is None:
        return sorted(Path(path).rglob(name)) if Path(path).is_dir() else []
    fs, key = where
    return sorted(here(path) / i.path[len(key) + 1:] for i in _infos(fs, key) if i.base_name == name)


def remove(path: str | os.PathLike) -> None:
    """Delete ``path`` (file or folder) here and in storage."""
    local, where = here(path), remote(path)
    if local.is_dir():
        shutil.rmtree(local, ignore_errors=True)
    else:
        local.unlink(missing_ok=True)
    if where is None:
        return
    import pyarrow.fs as pafs

    fs, key = where
    kind = fs.get_file_info(key).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(key)
    elif kind == pafs.FileType.File:
        fs.delete_file(key)


class PublishEvery:
    """Publish ``paths`` every ``seconds`` from a background thread while the
    block runs, and once at its end (a no-op for a local run): a driver on
    another node follows a stage's step log as it grows."""

    def __init__(self, paths: list, seconds: float = 30.0):
        self.paths = [p for p in paths if is_remote(p)]
        self.seconds = seconds

    def __enter__(self):
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if self.paths else None
        if self.thread is not None:
            self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.seconds):
            self._publish()

    def _publish(self) -> None:
        for path in self.paths:
            try:
                publish(path)
            except OSError:  # a transient storage error: the next round or the end publishes it
                pass

    def __exit__(self, *exc) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            self._publish()
