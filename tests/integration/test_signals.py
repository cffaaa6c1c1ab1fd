"""Stopping on a signal, as a terminal or a supervisor does it: `streamproc demo` and `streamproc worker` run
as real child processes, get real signals, and the kernel (/proc) says whether anything they started is left.

The requirement under test is a bound (docs/OPERATIONS.md, "Stopping"): gone within 3 s of SIGINT, SIGTERM or SIGHUP,
every child process stopped, every port free to bind again, exit status 128 + the signal's number. So the
3 s below is the behaviour itself, not a timeout for slowness.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.helpers import isolated_settings, recent_log
from support.sockets import listening_hosts

from streamproc.runtime.broker import free_port
from streamproc.settings import Settings

STOP_S = 3.0


# -- the process tree, from /proc -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process; None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """``root`` and every descendant (by parent pid, whatever their session), with their start times."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            table[int(entry)] = st
    tree = {root}
    while more := {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree:
        tree |= more
    return {pid: table[pid][2] for pid in tree if pid in table}


def survivors(tree: dict[int, int]) -> list[str]:
    """The processes of ``tree`` still running (the same process: same pid and start time, not a zombie)."""
    left = []
    for pid, started in tree.items():
        st = _stat(pid)
        if st is not None and st[2] == started and st[1] != "Z":
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            left.append(f"{pid} {cmd[:120]}")
    return left


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` and a server can bind it again (with SO_REUSEADDR, as servers do)."""
    if listening_hosts(port):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- running the commands -------------------------------------------------------------------------------


@dataclass
class Run:
    """One `streamproc` command as a child process, with its settings and its combined output."""

    proc: subprocess.Popen[bytes]
    settings: Settings
    out: Path
    tree: dict[int, int] = field(default_factory=dict)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def status(self, port: int | None = None) -> dict[str, Any] | None:
        """/status from the web port, or ``port`` (the metrics port); None if it does not answer."""
        url = f"http://127.0.0.1:{port or self.settings.web_port}/status"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_serving(self, *, owning: bool, consumed: bool = False, timeout_s: float = 90) -> dict[str, Any]:
        """Until /status answers (and the broker port is bound, if ours): ``owning``, once partitions are
        owned; ``consumed``, once events have been consumed too."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            st = self.status()
            if (st is not None and (not owning or st["partitions"]) and (not consumed or st["counts"].get("consumed"))
                    and (self.settings.kafka_bootstrap or listening_hosts(self.settings.embedded_broker_port))
                    and (not self.settings.metrics_port or self.status(self.settings.metrics_port) is not None)):
                return st
            time.sleep(0.1)
        raise TimeoutError(f"not serving in {timeout_s}s:\n{self.output()[-3000:]}")

    def signal(self, signum: int) -> float:
        """Send ``signum`` (the process tree is taken just before); returns when it was sent."""
        self.tree = process_tree(self.proc.pid)
        sent = time.monotonic()
        self.proc.send_signal(signum)
        return sent

    def stopped_within(self, since: float, bound_s: float) -> float:
        """Wait for the exit; the seconds it took, asserted within ``bound_s``."""
        try:
            self.proc.wait(bound_s + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {bound_s + 10:.0f}s after the signal:\n{self.output()[-3000:]}")
        took = time.monotonic() - since
        assert took <= bound_s, f"took {took:.2f}s to stop (bound {bound_s}s):\n{self.output()[-3000:]}"
        return took


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    """Start `streamproc ARGS` (own session, like a job of a shell); whatever a test leaves is killed after it."""
    runs: list[Run] = []

    def start(*args: str, settings: Settings | None = None) -> Run:
        # the metrics port too: its listener is stopped within the same budget, its port freed like the others
        settings = settings or isolated_settings(tmp_path, rollup_interval_s=1.0, metrics_port=free_port())
        out = tmp_path / f"{args[0]}-{len(runs)}.log"
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "streamproc", *args], env=env, stdout=out.open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        runs.append(Run(proc, settings, out))
        return runs[-1]

    yield start
    for run in runs:  # a failed test must not leave its stack to the next one
        tree = {**process_tree(run.proc.pid), **run.tree}
        for pid, started in tree.items():
            st = _stat(pid)
            if st is not None and st[2] == started:  # the very process started here, not a pid reused since
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        run.proc.wait()


def assert_all_gone(run: Run, signum: int) -> None:
    """The conventional exit status, no process of the tree left, the web, metrics and broker ports free."""
    assert run.proc.returncode == 128 + signum, f"exit {run.proc.returncode}:\n{run.output()[-3000:]}"
    assert len(run.tree) >= 2, f"the tree had no children: {run.tree}"  # the test saw the stack it meant to
    assert not survivors(run.tree), survivors(run.tree)
    ports = [run.settings.web_port, run.settings.metrics_port]
    ports += [] if run.settings.kafka_bootstrap else [run.settings.embedded_broker_port]
    assert all(port_free(p) for p in ports), {p: listening_hosts(p) for p in ports}


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_live_demo_stops_whole_within_3s(launch: Any, signum: int) -> None:
    """`streamproc demo` (live: broker, worker, a generator feeding it, the top-10 refreshing) while events
    flow: feed, worker and broker all stopped within 3 s of the signal."""
    run = launch("demo", "--rate", "300")
    run.wait_serving(owning=True, consumed=True)
    sent = run.signal(signum)
    took = run.stopped_within(sent, STOP_S)
    assert_all_gone(run, signum)
    print(f"demo {signal.Signals(signum).name}: stopped in {took:.2f}s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_worker_with_its_embedded_broker_stops_within_3s_after_its_last_flush(launch: Any, tmp_path: Path,
                                                                              signum: int) -> None:
    """`streamproc worker` with no bootstrap set (it runs the embedded broker), holding events it has not
    flushed yet: its last flush runs, then the broker goes, all within 3 s."""
    import asyncio

    from streamproc.logs.logfile import read_log
    from streamproc.logs.produce import publish

    run = launch("worker")
    run.wait_serving(owning=True)
    bootstrap = run.settings.replace(kafka_bootstrap=f"127.0.0.1:{run.settings.embedded_broker_port}")
    asyncio.run(publish(read_log(recent_log(tmp_path / "events.jsonl", 2000, seed=3)), bootstrap))
    run.wait_serving(owning=True, consumed=True)
    sent = run.signal(signum)
    took = run.stopped_within(sent, STOP_S)
    assert_all_gone(run, signum)
    assert "final flush done" in run.output(), run.output()[-3000:]
    print(f"worker {signal.Signals(signum).name}: stopped in {took:.2f}s")


def test_a_signal_during_startup_stops_cleanly(launch: Any) -> None:
    """SIGHUP (the terminal closing) while the worker serves /status but owns no partition yet (its consumer
    is joining the group): nothing applied, nothing to flush, nothing left."""
    run = launch("worker")
    st = run.wait_serving(owning=False)
    assert not st["partitions"], "the group was joined already: this test would not test startup"
    sent = run.signal(signal.SIGHUP)
    run.stopped_within(sent, STOP_S)
    assert_all_gone(run, signal.SIGHUP)


def test_a_hung_store_bounds_the_stop_and_a_second_signal_forces_it(launch: Any, tmp_path: Path) -> None:
    """Two workers on a broker and a ClickHouse server of their own (STREAMPROC_KAFKA_BOOTSTRAP and a
    ClickHouse URL set), the server hung (SIGSTOP) when they are asked to stop. One gets SIGTERM: its last
    rollup pass cannot finish, and it is out within 3 s all the same (what it had not written is replayed
    on restart: its checkpoint never passed it). The other gets SIGINT, then a second SIGINT while its
    graceful stop still waits for the store: it is out at once."""
    from streamproc.verify.chaos import frozen
    from streamproc.verify.stack import Stack

    with Stack(isolated_settings(tmp_path), tmp_path / "logs", shared_sink_port=free_port()) as stack:
        assert stack.clickhouse is not None and stack.clickhouse.proc is not None
        patient = launch("worker", settings=stack.settings.replace(metrics_port=free_port()))
        forced = launch("worker", settings=stack.settings.replace(web_port=free_port(), metrics_port=free_port()))
        for run in (patient, forced):
            run.wait_serving(owning=True)
        with frozen(stack.clickhouse.proc.pid):
            sent = patient.signal(signal.SIGTERM)
            forced.signal(signal.SIGINT)
            time.sleep(0.5)
            assert forced.proc.poll() is None, "stopped before the second signal: nothing left to force"
            again = forced.signal(signal.SIGINT)
            took_forced = forced.stopped_within(again, 1.0)
            took_patient = patient.stopped_within(sent, STOP_S)
    assert "second stop signal" in forced.output(), forced.output()[-3000:]
    for run, signum in ((patient, signal.SIGTERM), (forced, signal.SIGINT)):
        assert run.proc.returncode == 128 + signum, f"exit {run.proc.returncode}:\n{run.output()[-3000:]}"
        assert not survivors(run.tree) and port_free(run.settings.web_port) and port_free(run.settings.metrics_port)
    print(f"hung store: stopped in {took_patient:.2f}s; forced in {took_forced:.2f}s after the second signal")


def test_no_child_outlives_a_killed_parent(launch: Any) -> None:
    """SIGKILL leaves the parent no chance to stop anything: the kernel's parent-death signal does it."""
    run = launch("worker")
    run.wait_serving(owning=False)
    sent = run.signal(signal.SIGKILL)
    run.proc.wait(5)
    broker_port, web_port = run.settings.embedded_broker_port, run.settings.web_port
    deadline = sent + STOP_S
    # the kernel closes a dead process's sockets as it tears it down: a port may show held for a moment
    # after the last process of the tree is gone, so both are waited for within the same deadline
    while (survivors(run.tree) or not (port_free(broker_port) and port_free(web_port))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not survivors(run.tree), survivors(run.tree)
    assert port_free(broker_port), f"the broker's port {broker_port} still held {STOP_S} s after the kill"
    assert port_free(web_port), f"the web port {web_port} still held {STOP_S} s after the kill"
