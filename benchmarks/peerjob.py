"""The job every contestant of the throughput comparison computes, and the sink each of them fills.

The job: per 10 s window of an event's own ``ts`` and per streamer (the payload's ``streamer_id``),
the number of events, the likes (``count`` of likes) and the net amount (``amount_fen`` of paid orders
minus that of refunds). A message is an event when it is a JSON object whose ``ts`` is an integer,
``streamer_id`` a string, ``type`` and ``status`` strings and ``count`` and ``amount_fen`` integers
(each of these four may be absent or null; other fields are not looked at) — a typed schema, as a
framework that parses JSON against one applies it (Pathway drops a row whose field has another type) —
and whose ``ts`` is at most ``MAX_FUTURE_MS`` after and ``MAX_PAST_MS`` before the message's record
timestamp (the corpus has phone clocks hours ahead and timestamps from 1970; the worker refuses
those as future or late, and an event-time watermark that followed the former would close every
honest window).
A like adds its ``count``; an order adds its ``amount_fen`` if ``status`` is ``paid`` and takes it away
if ``refunded``. Nothing is deduplicated and nothing is dropped as late (each peer is given a lateness
allowance that covers the corpus), so the totals over all windows are known in advance from the
corpus: ``expected`` computes them, and a contestant whose sink does not end with exactly those
totals is reported as such, not ranked.

Standard library only: the peers import this in their own virtualenvs (``PYTHONPATH`` at the repo).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Iterable

WINDOW_MS = 10_000
MAX_FUTURE_MS = 300_000  # an event time this far after its record timestamp is refused (as the worker does)
MAX_PAST_MS = 600_000  # and this far before it (the worker's lateness is 30 s behind the streamer's newest)
LATENESS_MS = 1_800_000  # every peer's allowance for out-of-order events: more than the two bounds allow


def fields(obj: Any, record_ts: int) -> tuple[str, int, int, int] | None:
    """(streamer_id, ts, likes, amount) of one decoded message under the job's rule, or None."""
    if type(obj) is not dict:
        return None
    ts, sid = obj.get("ts"), obj.get("streamer_id")
    if type(ts) is not int or type(sid) is not str or not record_ts - MAX_PAST_MS <= ts <= record_ts + MAX_FUTURE_MS:
        return None
    kind, count, amount, status = obj.get("type"), obj.get("count"), obj.get("amount_fen"), obj.get("status")
    if (kind is not None and type(kind) is not str) or (status is not None and type(status) is not str) or (
            count is not None and type(count) is not int) or (amount is not None and type(amount) is not int):
        return None
    likes = count if kind == "like" and count is not None else 0
    net = 0
    if kind == "order" and amount is not None:
        net = amount if status == "paid" else -amount if status == "refunded" else 0
    return sid, ts, likes, net


def expected(messages: Iterable[tuple[bytes, int]]) -> dict[str, int]:
    """The totals the job must end with over these (value, record timestamp) messages (one event each)."""
    events = likes = amount = 0
    windows: set[tuple[int, str]] = set()
    try:
        import orjson  # the parent has it; the result is the same as json's for this rule
        loads = orjson.loads
    except ImportError:
        loads = json.loads
    for value, record_ts in messages:
        try:
            f = fields(loads(value), record_ts)
        except (ValueError, UnicodeDecodeError):
            continue
        if f is None:
            continue
        sid, ts, lk, am = f
        events += 1
        likes += lk
        amount += am
        windows.add((ts - ts % WINDOW_MS, sid))
    return {"events": events, "likes": likes, "amount": amount, "windows": len(windows)}


class Sink:
    """The latest value of every window, as a peer's output delivers it, with running totals.

    ``put`` replaces a window's (events, likes, amount); ``done`` says whether the totals reached the
    expected event count — the moment the sink holds the last window, which stops the clock.
    """

    def __init__(self, expect: dict[str, int]) -> None:
        self.expect = expect
        self.windows: dict[Any, tuple[int, int, int]] = {}
        self.events = self.likes = self.amount = 0
        self.updates = 0
        self.last_update = time.monotonic()

    def put(self, key: Any, events: int, likes: int, amount: int) -> None:
        old = self.windows.get(key)
        if old is not None:
            self.events -= old[0]
            self.likes -= old[1]
            self.amount -= old[2]
        self.windows[key] = (events, likes, amount)
        self.events += events
        self.likes += likes
        self.amount += amount
        self.updates += 1
        self.last_update = time.monotonic()

    def remove(self, key: Any) -> None:
        old = self.windows.pop(key, None)
        if old is not None:
            self.events -= old[0]
            self.likes -= old[1]
            self.amount -= old[2]

    def done(self) -> bool:
        return self.events >= self.expect["events"]

    def totals(self) -> dict[str, int]:
        return {"events": self.events, "likes": self.likes, "amount": self.amount, "windows": len(self.windows)}

    def totals_match(self) -> bool:
        got = self.totals()
        return all(got[k] == self.expect[k] for k in ("events", "likes", "amount"))


class Clock:
    """CPU and wall time of this process from the first message the job holds to the sink's last window."""

    def __init__(self) -> None:
        self.born = time.perf_counter()
        self.t0: float | None = None
        self.cpu0 = 0.0

    def first_message(self) -> None:
        if self.t0 is None:
            self.t0, self.cpu0 = time.perf_counter(), _cpu()

    def result(self, sink: Sink, **extra: Any) -> dict[str, Any]:
        t1, cpu1 = time.perf_counter(), _cpu()
        t0 = self.t0 if self.t0 is not None else t1
        return {"events": sink.events, "seconds": t1 - t0, "cpu_s": cpu1 - (self.cpu0 if self.t0 else cpu1),
                "peak_rss_bytes": _peak_rss(), "startup_s": round(t0 - self.born, 3), "totals": sink.totals(),
                "expected": sink.expect, "totals_match": sink.totals_match(), "sink_updates": sink.updates, **extra}


def report(result: dict[str, Any]) -> None:
    """Print the one JSON line the parent reads and leave at once (frameworks' shutdowns are not timed)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peak_rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
