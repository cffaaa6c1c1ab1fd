"""How a streamproc process stops on a signal, and why none of its child processes can outlive it.

The policy (docs/OPERATIONS.md, "Stopping"): SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closing) ask for a
graceful stop; the process is gone within ``FORCE_AFTER_S`` of the first of them whatever it was doing,
every child stopped and every port released; a second stop signal forces the stop at once; the exit
status is 128 + the signal's number (130, 143, 129), so that a script can tell a stopped run from a
finished one.

Signals reach the process by two paths, for two jobs:

- The Python handler runs in the main thread, between two bytecodes. That is where a graceful stop
  belongs: by default it raises ``StopSignal`` there, which unwinds the code through its ``finally``
  clauses (each part stops what it started) up to the command, which returns the status. The worker
  diverts it (``Stopper.diverted``) into its event loop, where the stop is a Faust stop with a last flush.
- The C-level handler also writes the signal's number to a wakeup socket (``signal.set_wakeup_fd``)
  that a watcher thread reads. That thread keeps the deadline and answers a second signal, even while
  the main thread is stuck in a long call (a chDB statement, a hung socket) and would run no Python
  handler in time. Forcing kills every child's process group with SIGKILL and ends the process with
  ``os._exit``: no flush then, which is safe by design, since checkpoints and committed offsets only
  ever trail a completed flush, so a restart replays whatever was not written.

Children are started by ``spawn``, for three reasons together:

- In their own session (``start_new_session``), so a terminal's Ctrl-C or hang-up reaches only the
  parent, which stops them in order (the feed before the worker, the worker's last flush before the
  broker), and a forced stop can kill each child's whole group.
- Registered with the stopper, so that forcing kills them.
- Armed with a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``): if the parent dies in any way,
  SIGKILL included, the kernel signals the child. This is what makes an orphan impossible, because it
  needs nothing from the dying parent. It is armed by a few lines of Python that the child runs before
  it execs the real program (``_GUARD``), rather than by ``preexec_fn``, which is unsafe in a parent
  that runs threads (the demo feeds the broker from one); those lines also check that the parent did not
  die before the signal was armed. A watched pipe would need the child's cooperation, and the embedded
  broker is a foreign binary. Note that the kernel's "parent" is the *thread* that started the child:
  spawn long-lived children from the main thread (every caller here does). Off Linux there is no such
  signal, and the parent's stop and forced stop are what remain.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, Iterator, NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_AFTER_S = 2.5  # first stop signal -> forced stop; keeps every process well inside its 3 s

# Run by the child before it execs the real program: arm the parent-death signal, then make sure the
# parent is still the one that started us (it may have died before the signal was armed).
# Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: restore them, as
# subprocess does for any child.
_GUARD = (
    "import ctypes, os, signal, sys\n"
    "parent, sig = int(sys.argv[1]), int(sys.argv[2])\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != parent:\n"
    "    os._exit(128 + sig)\n"
    "for name in ('SIGPIPE', 'SIGXFSZ'):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_DFL)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def exit_status(signum: int) -> int:
    """The conventional status of a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)


class StopSignal(KeyboardInterrupt):
    """Raised in the main thread by the first stop signal.

    A KeyboardInterrupt, as Ctrl-C always raised: it passes every ``except Exception`` and leaves an
    asyncio loop at once (a task that raises anything else only stores it), so the ``finally`` clauses
    on the way up stop what each part started.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def status(self) -> int:
        return exit_status(self.signum)


class Stopper:
    """The process's stop: which signal came first, how much time is left, the children to kill."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.since: float | None = None  # monotonic time of the first stop signal
        self._handler: Callable[[int], None] | None = None  # None: raise StopSignal
        self._handled = False
        self._children: set[subprocess.Popen[Any]] = set()
        self._installed = False
        self._wakeup: socket.socket | None = None

    # -- signals --------------------------------------------------------------------------------

    def install(self) -> "Stopper":
        """Take SIGINT, SIGTERM and SIGHUP for this process (once; from the main thread only)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = writer
        threading.Thread(target=self._watch, args=(reader,), name="streamproc-stop", daemon=True).start()
        self._installed = True
        return self

    def _note(self, signum: int) -> None:
        """Remember the first stop signal. No lock: a signal handler must not wait for one, and two
        threads racing here both write a stop signal that did arrive (``since`` first: whoever sees a
        signal can count on a start time)."""
        if self.since is None:
            self.since = time.monotonic()
        if self.signum is None:
            self.signum = int(signum)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The Python handler (main thread): the graceful part, once. Later signals are the watcher's."""
        self._note(signum)
        if self._handled:
            return
        self._handled = True  # no logging here: a write interrupted by this handler cannot be re-entered
        handler = self._handler
        if handler is None:
            raise StopSignal(signum)
        handler(signum)

    def _watch(self, reader: socket.socket) -> None:
        """The watcher thread: forces the stop at the deadline, or at once on a second stop signal."""
        deadline: float | None = None
        while True:
            # never 0: a zero timeout would make the socket non-blocking (BlockingIOError, not a timeout)
            reader.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
            try:
                data = reader.recv(64)
            except TimeoutError:
                self.force(f"still running {FORCE_AFTER_S:g}s after the stop signal")
            if not data:
                return
            for signum in data:
                if signum not in STOP_SIGNALS:
                    continue
                if deadline is not None:
                    self.force("second stop signal")
                self._note(signum)
                deadline = (self.since or time.monotonic()) + FORCE_AFTER_S
                log.info("%s received: stopping (again to force)", signal.Signals(signum).name)

    @contextlib.contextmanager
    def diverted(self, handler: Callable[[int], None]) -> Iterator[None]:
        """Within the block, the first stop signal calls ``handler(signum)`` (in the main thread, from a
        signal handler: it must only schedule work, e.g. with ``loop.call_soon_threadsafe``) instead of
        raising StopSignal. For an event loop, whose stop is a coroutine."""
        previous, self._handler = self._handler, handler
        try:
            yield
        finally:
            self._handler = previous

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    @property
    def status(self) -> int:
        """The exit status of a stop by signal (143 if none came: a stop asked for otherwise)."""
        return exit_status(self.signum if self.signum is not None else signal.SIGTERM)

    def remaining(self, keep_s: float = 0.0) -> float:
        """Seconds left for graceful work, keeping ``keep_s`` before the forced stop (inf: no stop yet)."""
        if self.since is None:
            return math.inf
        return max(0.0, self.since + FORCE_AFTER_S - keep_s - time.monotonic())

    def bound(self, timeout_s: float, keep_s: float = 0.0) -> float:
        """``timeout_s``, shortened to what the stop leaves when one is under way."""
        return min(timeout_s, self.remaining(keep_s))

    def force(self, why: str) -> NoReturn:
        """Kill every child's process group and end this process now, with the stop's status.

        Each killed child is reaped first (briefly): a process is only gone, its ports free, once all
        its threads have exited, and whoever waits for this one should find its children gone too."""
        children = list(self._children)
        for proc in children:
            kill_group(proc)
        for proc in children:
            with contextlib.suppress(Exception):
                proc.wait(0.5)
        with contextlib.suppress(OSError):  # straight to the fd: the main thread may hold sys.stderr's lock
            os.write(2, f"streamproc: {why}: stopping now (pid {os.getpid()})\n".encode())
        os._exit(self.status)

    def exit_now(self, status: int) -> NoReturn:
        """End the process once a stop by signal has done its graceful part (children stopped, store
        closed): logs and standard streams flushed, the interpreter's teardown skipped. That teardown
        saves nothing more and takes 0.2 to 1 s in a process that ran chDB (the engine's own exit)."""
        with contextlib.suppress(Exception):
            logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    # -- children -------------------------------------------------------------------------------

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        self._children.add(proc)

    def disown(self, proc: subprocess.Popen[Any]) -> None:
        self._children.discard(proc)


stopper = Stopper()


def install() -> Stopper:
    """The process's stopper, with its signal handlers installed (idempotent)."""
    return stopper.install()


def spawn(cmd: list[str], *, death_signal: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen[Any]:
    """Start a child process that cannot outlive this one (module docstring): its own session, known to
    the stopper, and signalled with ``death_signal`` by the kernel when this process dies.

    ``death_signal``: SIGTERM for a child with a graceful part of its own (a worker flushes), SIGKILL
    for one with nothing to save (the in-memory broker).
    """
    if sys.platform.startswith("linux"):
        cmd = [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), str(int(death_signal)), *cmd]
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    stopper.adopt(proc)
    return proc


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a spawned child's whole process group (its session: it leads both), if not yet reaped."""
    if proc.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def reap(proc: subprocess.Popen[Any], timeout_s: float) -> int | None:
    """Wait up to ``timeout_s`` for a child; its status, or None if it still runs."""
    try:
        code = proc.wait(max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        return None
    stopper.disown(proc)
    return code


_asked: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()


def ask(proc: subprocess.Popen[Any], signum: int = signal.SIGTERM) -> None:
    """Ask a child to stop, once: our children take a second stop signal as an order to force."""
    if proc.poll() is None and proc not in _asked:
        _asked.add(proc)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


def end(proc: subprocess.Popen[Any], timeout_s: float, *, keep_s: float = 0.3,
        signum: int = signal.SIGTERM) -> int:
    """Stop a spawned child: ``signum`` (unless already asked), then up to ``timeout_s`` for it to go
    (during a stop by signal, only until ``keep_s`` before the forced stop), then SIGKILL to its group.
    Returns its exit status (negative: killed by that signal)."""
    ask(proc, signum)
    code = reap(proc, stopper.bound(timeout_s, keep_s))
    if code is None:
        log.warning("process %d did not stop in time; killing it", proc.pid)
        kill_group(proc)
        code = proc.wait()
        stopper.disown(proc)
    return code
