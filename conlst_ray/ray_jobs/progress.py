"""What a long stage tells its user while it runs: a progress line at a
sensible interval (done/total, rate, ETA, the current losses) and, for
TensorBoard, every step's logged quantities as event files."""

from __future__ import annotations

import contextvars
import logging
import math
import time
from pathlib import Path
from typing import Optional

from conlst_ray.config.stages import BY_NAME
from conlst_ray.storage import mirror as storage
from conlst_ray.training.stage_files import StageFiles

log = logging.getLogger(__name__)

# the terms a progress line shows when a step logs them
SHOWN = ("loss", "loss_cl", "loss_clcs", "loss_sup", "loss_u", "selected_rate", "lr")


def eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def unit(stage: str) -> str:
    """What a stage's loop over its data is called (config/stages.py)."""
    return BY_NAME[stage].pass_name if stage in BY_NAME else "epoch"


class Progress:
    """``[conl] epoch 1/1 step 120/467 (26%) 6.1 steps/s ETA 0m57s loss 0.031``
    printed at most every ``interval`` seconds."""

    def __init__(self, stage: str, epochs: int, interval: float = 10.0):
        self.stage, self.epochs, self.interval = stage, epochs, interval
        self.t_epoch = self.last = time.monotonic()
        self.total: Optional[int] = None
        self.done = 0

    def begin_epoch(self, epoch: int, total: Optional[int]) -> None:
        self.epoch, self.total, self.done = epoch, total, 0
        self.t_epoch = self.last = time.monotonic()

    def step(self, logs: dict) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = self.done / max(now - self.t_epoch, 1e-9)
        where = f"step {self.done}"
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            where += f"/{self.total} ({100 * self.done / self.total:.0f}%) {rate:.1f} steps/s ETA {eta(left)}"
        else:
            where += f" {rate:.1f} steps/s"
        terms = " ".join(f"{k} {logs[k]:.4g}" for k in SHOWN if isinstance(logs.get(k), (int, float)))
        log.info(f"[{self.stage}] {unit(self.stage)} {self.epoch + 1}/{self.epochs} {where} {terms}".rstrip())


def epoch_line(stage: str, record: dict, epochs: int) -> str:
    """``[ssl] iteration 2/3 done at step 466: source dev 69.8 %, target dev 61.2 %, selected 50 %``"""
    parts = [f"{name} {100 * record[key]:.1f} %" for key, name in
             (("source_dev_acc", "source dev"), ("target_dev_acc", "target dev"), ("selected_share", "selected"),
              ("selected_pseudo_label_acc", "selected pseudo-label acc")) if isinstance(record.get(key), (int, float))]
    head = f"[{stage}] {unit(stage)} {record.get('epoch', 0) + 1}/{epochs} done at step {record.get('step', '?')}"
    return head + (": " + ", ".join(parts) if parts else "")


class TensorBoard:
    """Every step's logged terms under ``folder`` as TensorBoard event files
    (tensorboardX's format, which Ray Tune installs); epoch records under
    ``epoch/``. Written by the calling thread, not tensorboardX's writer
    thread: that thread dies on a full disk and leaves every later write
    blocked on its queue (a hung run). A write that fails stops the event
    files with one line; the stage goes on (and meets the full disk itself)."""

    FLUSH_S = 10.0

    def __init__(self, folder: Path, stage: str):
        self.stage, self.writer, self.flushed = stage, None, time.monotonic()
        self._guarded(lambda: self._open(folder))

    def _open(self, folder: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.writer = EventsWriter(str(Path(folder) / "events"))

    def step(self, step: int, logs: dict) -> None:
        self._scalars(f"{self.stage}/", step, logs)

    def epoch(self, step: int, logs: dict) -> None:
        self._scalars(f"{self.stage}/epoch/", step, logs)

    def _scalars(self, prefix: str, step: int, logs: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        for k, v in logs.items():
            # a term a step could not compute (NaN: CoNL's batch without negatives) is left out;
            # tensorboardX would print a warning for each
            if self.writer is not None and isinstance(v, (int, float)) and not isinstance(v, bool) \
                    and math.isfinite(v):
                event = Event(wall_time=time.time(), step=step, summary=scalar(prefix + k, v))
                self._guarded(lambda e=event: self.writer.write_event(e))
        if time.monotonic() - self.flushed >= self.FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self.flushed = time.monotonic()
        self._guarded(lambda: self.writer and self.writer.flush())

    def _guarded(self, write) -> None:
        try:
            write()
        except OSError as exc:  # a full disk, a folder gone: TensorBoard is a view, not the run
            self.writer = None
            log.info(f"[{self.stage}] TensorBoard event files stopped: {exc}")

    def close(self) -> None:
        if self.writer is not None:
            self._guarded(self.writer.close)
            self.writer = None


class StageWatcher:
    """The driver's view of a training stage that runs in Ray Train workers:
    a thread tails the stage's steps.jsonl and metrics.jsonl (written by
    rank 0), prints a progress line at most every ``interval`` seconds, and
    writes both as TensorBoard event files under ``files.tensorboard``.
    Worker output does not reach the driver (log_to_driver is off: it is
    mostly third-party noise), so this is how a user sees a stage move."""

    def __init__(self, files: StageFiles, stage: str, epochs: int, interval: float = 10.0,
                 tensorboard: bool = True):
        import threading

        self.files, self.stage = files, stage
        self.progress = Progress(stage, epochs, interval)
        self.tb = TensorBoard(files.tensorboard, stage) if tensorboard else None
        self.logs = {"steps": files.steps, "metrics": files.metrics}
        self.fetched_at = {name: -1e9 for name in self.logs}
        self.copies = None  # object storage: the logs are fetched to a private folder
        self.epoch = None
        self.stop_event = threading.Event()
        # the thread prints in the caller's context: a per-language run's lines keep their [lang] tag
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), daemon=True,
                                       name=f"watch-{stage}")
        self.offsets = {name: 0 for name in self.logs}
        # what is there already (a resumed stage's finished epochs) was shown by the command that wrote it
        self.seen: dict = {name: set() for name in self.logs}
        for name in self.logs:
            self._new(name)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=30)
        self.poll()  # the last lines
        if self.tb is not None:
            self.tb.close()
            storage.publish(self.files.tensorboard)
        if self.copies is not None:
            import shutil

            shutil.rmtree(self.copies, ignore_errors=True)

    def _fetched(self, name: str) -> Path:
        """The local copy of a log rank 0 writes: with object storage, fetched
        again at most every ``interval`` seconds (and at the end)."""
        path = self.logs[name]
        if not storage.is_remote(path):
            return path
        if self.copies is None:
            import tempfile

            self.copies = Path(tempfile.mkdtemp(prefix=f"conlst-watch-{self.stage}-"))
        now = time.monotonic()
        if now - self.fetched_at[name] >= self.progress.interval or self.stop_event.is_set():
            # never into the node's mirror: rank 0 may be appending to that very file on this node
            self.fetched_at[name] = now
            storage.fetch(path, into=self.copies / name)
        return self.copies / name

    def _run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.poll()

    def poll(self) -> None:
        for record in self._new("steps"):
            epoch = record.get("epoch", record.get("iteration", 0))
            if epoch != self.epoch:
                self.epoch = epoch
                self.progress.begin_epoch(epoch, record.get("epoch_steps"))
            self.progress.step(record)
            if self.tb is not None:
                self.tb.step(int(record.get("step", 0)), record)
        for record in self._new("metrics"):
            if self.tb is not None:
                self.tb.epoch(int(record.get("step", 0)), record)
            log.info(epoch_line(self.stage, record, self.progress.epochs))

    def _new(self, name: str) -> list:
        import json

        path = self._fetched(name)
        if not path.is_file():
            return []
        size = path.stat().st_size
        if size < self.offsets[name]:  # cut back to a restored checkpoint: read again, show what is new
            self.offsets[name] = 0
        with path.open("rb") as fh:
            fh.seek(self.offsets[name])
            data = fh.read()
        complete = data.rfind(b"\n") + 1  # a line being written is read next time
        self.offsets[name] += complete
        out = []
        for line in data[:complete].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            key = (record.get("epoch", record.get("iteration")), record.get("step"))
            if key not in self.seen[name]:  # each epoch and step shown once, whichever command wrote it
                self.seen[name].add(key)
                out.append(record)
        return out
