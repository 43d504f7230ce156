"""End-to-end jobs that run beside the rest of the suite.

Each job here is self-contained: it works in subprocesses of its own, each
with a Ray of its own (a CLI run, a two-node cluster, a study), and returns
what its tests assert on. On 2 cores the serial suite leaves about a third
of the CPU idle (process and Ray start-ups wait more than they compute), so
``conftest.py`` starts the jobs that the selected tests need, one after the
other in a background thread per lane (``register(lane=)``), as soon as
collection ends; a test waits
for its job's result only when it gets there. A job no selected test needs
never runs, and a fixture asked for outside that path runs its job itself.

Jobs are named after the fixtures that return them (``conftest.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

JobFn = Callable[[Path], Any]


class Runner:
    """Runs jobs in order, one thread per lane; ``result(name)`` waits for one."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobFn] = {}
        self.lanes: dict[str, int] = {}
        self.done: dict[str, threading.Event] = {}
        self.outcome: dict[str, tuple[bool, Any]] = {}
        self.children: list[subprocess.Popen] = []
        self.stopping = False

    def register(self, name: str, lane: int = 0) -> Callable[[JobFn], JobFn]:
        """``lane``: jobs of one lane run one after the other; lanes run side
        by side. Lane 0 holds the jobs whose timing matters (Ctrl+C at a
        stage, a lost node); a second lane takes plain CLI runs of tiny
        configs, which use the core the first leaves idle once the
        in-process tests are done."""
        def add(fn: JobFn) -> JobFn:
            self.jobs[name], self.lanes[name] = fn, lane
            return fn
        return add

    def start(self, order: list[tuple[str, Path]]) -> None:
        """Run ``(job name, its folder)`` in this order, a daemon thread per lane."""
        for name, _ in order:
            self.done[name] = threading.Event()
        for lane in sorted({self.lanes[name] for name, _ in order}):
            jobs = [(name, out) for name, out in order if self.lanes[name] == lane]
            threading.Thread(target=self._run_all, args=(jobs,), daemon=True, name=f"background-jobs-{lane}").start()

    def _run_all(self, order: list[tuple[str, Path]]) -> None:
        for name, out in order:
            if self.stopping:
                self.outcome[name] = (False, "the test session ended first")
            else:
                self._run_one(name, out)
            self.done[name].set()

    def _run_one(self, name: str, out: Path) -> None:
        try:
            self.outcome[name] = (True, self.jobs[name](out))
        except BaseException:  # noqa: BLE001 -- handed to the test that asks, with its traceback
            self.outcome[name] = (False, traceback.format_exc())

    def result(self, name: str, out_if_not_started: Callable[[], Path]) -> Any:
        """The job's result (waiting for it); a job not started in the
        background runs here. A job that raised fails the asking test."""
        if name not in self.done:
            return self.jobs[name](out_if_not_started())
        self.done[name].wait()
        ok, value = self.outcome[name]
        if not ok:
            import pytest

            pytest.fail(f"background job {name} failed:\n{value}", pytrace=False)
        return value

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        """subprocess.Popen in a session of its own, stopped with the test session.
        Its torch computes on one thread: the other core is the in-process tests'
        (measured beside them: 183 -> 166 CPU-seconds, 98 -> 89 s)."""
        if self.stopping:
            raise RuntimeError("the test session ended")
        env = {**(kwargs.pop("env", None) or os.environ), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(*args, start_new_session=True, env=env, **kwargs)
        self.children.append(proc)
        return proc

    def run(self, cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run through ``popen``: output captured as text."""
        proc = self.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            raise AssertionError(f"{cmd[:4]} ran past {timeout} s:\n{err[-3000:]}") from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the job's own subprocesses (Ray's) too
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """At the session's end: no new job, and the running ones' processes killed."""
        self.stopping = True
        for proc in self.children:
            if proc.poll() is None:
                self.kill(proc)


RUNNER = Runner()
