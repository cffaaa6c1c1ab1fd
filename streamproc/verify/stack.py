"""Run the real parts side by side: broker, topics, worker processes; used by the demo and the tests.

Workers run as separate processes (as in production) so that they can be killed with SIGKILL, and so
that chDB's single-writer lock on the data path belongs to one worker at a time. Every part is started
with ``lifecycle.spawn``, so none can outlive the process that runs the stack, however that ends; on a
stop signal the waits here are cut to the stop budget (``lifecycle.FORCE_AFTER_S``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from streamproc.runtime import lifecycle
from streamproc.runtime.broker import EmbeddedBroker
from streamproc.runtime.topics import EVENT_TOPICS, create_topics, load_specs
from streamproc.settings import Settings

log = logging.getLogger(__name__)


class WorkerProcess:
    """One `streamproc worker` child process with its own web port."""

    def __init__(self, settings: Settings, log_path: str | Path | None = None,
                 crash_before_checkpoint: int = 0) -> None:
        self.settings = settings
        self.log_path = Path(log_path) if log_path else None
        self.crash_before_checkpoint = crash_before_checkpoint  # >0: a worker armed with that fault
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "WorkerProcess":
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        cmd = [sys.executable, "-m", "streamproc", "worker"]
        if self.crash_before_checkpoint:
            cmd = [sys.executable, "-m", "streamproc.verify.faulty_worker",
                   "--crash-before-checkpoint", str(self.crash_before_checkpoint)]
        # SIGTERM if this process dies: the worker's own stop flushes, within its stop budget
        self.proc = lifecycle.spawn(cmd, death_signal=signal.SIGTERM, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def get(self, path: str, timeout_s: float = 2) -> bytes:
        """GET a path of the worker's web server, with its bearer token when one is set."""
        headers = {"Authorization": f"Bearer {self.settings.web_token}"} if self.settings.web_token else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=timeout_s) as r:
            return r.read()

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.get("/status"))
        except OSError:
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_assigned(self, n_partitions: int | None = None, timeout_s: float = 90) -> dict[str, Any]:
        """Wait until the worker owns partitions (``n_partitions`` of them if given)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited with {self.proc.returncode if self.proc else None}")
            st = self.status()
            if st and st["partitions"] and (n_partitions is None or len(st["partitions"]) >= n_partitions):
                return st
            time.sleep(0.2)
        raise TimeoutError("worker got no partitions in time")

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, as a crashed machine."""
        if self.alive():
            lifecycle.kill_group(self.proc)
            lifecycle.reap(self.proc, 30)

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM) without waiting: to stop several parts at once."""
        if self.proc is not None:
            lifecycle.ask(self.proc)

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (during a stop by signal: before the forced stop).

        The worker exits with 143 (128 + SIGTERM) once its last flush is done (docs/OPERATIONS.md, "Stopping")."""
        if self.proc is not None:
            lifecycle.end(self.proc, timeout_s, keep_s=0.4)
        return self.proc.returncode if self.proc else None


def flushed_offsets(workers: list[WorkerProcess]) -> dict[str, int]:
    """Per partition ("topic/partition"), the highest offset the live workers report flushed."""
    done: dict[str, int] = {}
    for w in workers:
        st = w.status() if w.alive() else None
        for tp, info in (st or {}).get("partitions", {}).items():
            done[tp] = max(done.get(tp, -1), info["flushed_offset"])
    return done


def flushed_past(workers: list[WorkerProcess], want: dict[str, int]) -> bool:
    """Whether the live workers have flushed every partition of ``want`` up to its offset."""
    done = flushed_offsets(workers)
    return all(done.get(tp, -1) >= o for tp, o in want.items())


def wait_flushed(workers: list[WorkerProcess], last_offsets: dict[tuple[str, int], int], timeout_s: float = 120) -> float:
    """Wait until the live workers together have flushed up to every produced offset; returns when."""
    deadline = time.monotonic() + timeout_s
    want = {f"{t}/{p}": o for (t, p), o in last_offsets.items()}
    while time.monotonic() < deadline:
        if flushed_past(workers, want):
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"not flushed in {timeout_s}s: want {want}")


def event_partitions() -> int:
    return sum(s.partitions for s in load_specs() if s.name in EVENT_TOPICS)


class ClickHouseServerProcess:
    """`streamproc clickhouse-server`: one process owns chDB, every worker writes through HTTP."""

    def __init__(self, settings: Settings, port: int, log_path: Path) -> None:
        self.settings, self.port, self.log_path = settings, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> "ClickHouseServerProcess":
        env = {**os.environ, **self.settings.to_env()}
        self.proc = lifecycle.spawn([sys.executable, "-m", "streamproc", "clickhouse-server", "--port", str(self.port)],
                                    death_signal=signal.SIGTERM, env=env, stdout=open(self.log_path, "ab"),
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("embedded ClickHouse server exited") from None
                time.sleep(0.1)
        raise TimeoutError("embedded ClickHouse server did not answer")

    def stop(self) -> None:
        """SIGTERM (the server closes chDB), SIGKILL after 10 s or at the stop budget's edge."""
        if self.proc is not None:
            lifecycle.end(self.proc, 10, keep_s=0.2)


class Stack:
    """Broker (embedded unless STREAMPROC_KAFKA_BOOTSTRAP is set) with the topics created."""

    def __init__(self, settings: Settings, log_dir: Path, *, shared_sink_port: int | None = None) -> None:
        """``shared_sink_port``: serve chDB over HTTP there, so that several workers can share it."""
        self.log_dir = log_dir
        self.broker: EmbeddedBroker | None = None
        self.clickhouse: ClickHouseServerProcess | None = None
        if not settings.kafka_bootstrap:
            self.broker = EmbeddedBroker(settings.embedded_broker_port, log_dir / "broker.log")
            settings = settings.replace(kafka_bootstrap=self.broker.bootstrap)
        if shared_sink_port and not settings.clickhouse_url:
            self.clickhouse = ClickHouseServerProcess(settings, shared_sink_port, log_dir / "clickhouse.log")
            settings = settings.replace(clickhouse_url=self.clickhouse.url)
        self.settings = settings
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.broker:
                self.broker.start()
            if self.clickhouse:
                self.clickhouse.start()
            asyncio.run(create_topics(self.settings))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:  # a run that failed half-way (or was stopped) leaves no worker behind
            w.kill()
        if self.clickhouse:
            self.clickhouse.stop()
        if self.broker:
            self.broker.stop()

    def stop_workers(self, timeout_s: float = 30) -> None:
        """Stop every live worker gracefully, all at once: SIGTERM to each, then wait for each."""
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.stop(timeout_s)

    def worker(self, index: int = 0, crash_before_checkpoint: int = 0, **overrides: Any) -> WorkerProcess:
        settings = self.settings.replace(**overrides) if overrides else self.settings
        self.workers.append(WorkerProcess(settings, self.log_dir / f"worker-{index}.log", crash_before_checkpoint))
        return self.workers[-1]
