"""A paced feed of records into the broker from a thread of its own, for the runs that measure the
worker while it is fed (freshness, soak, readers, boards under load)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from streamproc.logs.logfile import LogRecord
from streamproc.logs.produce import PublishResult, publish
from streamproc.settings import Settings

from .corpus import live


class Feed:
    """Publishes records at ``rate`` from a thread of its own until stopped (or out of records, unless
    ``cycle``), each stamped as it is sent (``corpus.live``)."""

    def __init__(self, settings: Settings, records: list[LogRecord], rate: float, cycle: bool = False) -> None:
        self.result = PublishResult()  # its last_offsets move as the broker acknowledges
        self.error: BaseException | None = None
        self._settings, self._records, self._rate, self._cycle = settings, records, rate, cycle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()  # replaced by one of the feed's own loop when it starts
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await publish(live(self._records, self._cycle), self._settings, rate=self._rate, batch=500,
                          result=self.result, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by stop(): a lost feed must fail the run, not hide
            self.error = exc
            self._ready.set()

    def __enter__(self) -> "Feed":
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed if the feed ran out of records
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"the feed failed: {self.error!r}") from self.error
