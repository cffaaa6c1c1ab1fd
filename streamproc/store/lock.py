"""Which process holds an embedded store, and where it can be reached: a lock file beside the data path.

chDB lets one process open a data path. Its own refusal is an error text that changes between versions
(chdb-core 26.9 says only "Error initializing EmbeddedServer") and never names the holder, so it cannot
tell a reader what to do. The process that opens a store therefore first takes an exclusive ``flock`` on
``<data path>.lock`` and writes its pid there; the kernel drops the lock when that process ends, even on
``kill -9``, so a file left behind never blocks anyone. The holder may add where it can be reached (the
worker adds its web address), which is how ``streamproc leaderboard`` finds the worker to ask.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


class StoreBusy(Exception):
    """Another process holds the store; ``holder`` is what it published (``pid``, maybe ``web``)."""

    def __init__(self, path: str | Path, holder: dict[str, Any]) -> None:
        self.path = str(path)
        self.holder = holder
        super().__init__(f"{self.path} is held by process {holder.get('pid', '?')}")


def lock_file(data_path: str | Path) -> Path:
    """The lock file of a data path: beside it, not inside, so it is no part of what chDB manages."""
    p = Path(data_path)
    return p.with_name(p.name + ".lock")


def holder(data_path: str | Path) -> dict[str, Any]:
    """What the holder of ``data_path`` published; empty if nothing readable is there (a holder that has
    not written yet, or a file caught mid-rewrite: the caller then falls back on its own defaults)."""
    try:
        info = json.loads(lock_file(data_path).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class StoreLock:
    """The exclusive hold on one data path, for as long as this object (or the process) lives."""

    def __init__(self, data_path: str | Path) -> None:
        """Take the lock or raise StoreBusy at once: a second opener must learn who holds the store, not wait."""
        path = lock_file(data_path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StoreBusy(data_path, holder(data_path)) from None
        self.announce({})

    def announce(self, info: dict[str, Any]) -> None:
        """Publish this process's pid and ``info`` (e.g. ``{"web": "http://127.0.0.1:6066"}``) as JSON.

        Written over the old content, then cut to length, so a reader never sees an empty file in between.
        """
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        """Let the next process in; again is a no-op (closing the fd twice could close another file
        that reused its number). The file stays: removing it would race with one that opens it now."""
        if self._fd < 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
