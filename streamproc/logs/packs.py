"""Packing a recorded log as a batching producer would, and the log a pack stream stands for.

The pack format and what the worker judges in one message are ``ingest/pack.py``'s; this module only
groups and ungroups log records with that one rule, for replay, benchmarks and the oracle.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from streamproc.ingest.events import Rejection
from streamproc.ingest.pack import MAX_BYTES, MAX_LINES, message_units
from streamproc.logs.logfile import LogRecord


def pack_records(records: Iterable[LogRecord], size: int, max_bytes: int = MAX_BYTES) -> Iterator[LogRecord]:
    """Group consecutive records of each (topic, key) into packs of up to ``size`` events.

    Like a producer that respects the size limit, a pack is closed before it would pass ``max_bytes``
    (a record that is too big on its own is sent alone, and refused alone).
    """
    if size < 1:
        raise ValueError("pack size must be at least 1")
    open_packs: dict[tuple[str, bytes | None], list[LogRecord]] = {}
    sizes: dict[tuple[str, bytes | None], int] = {}  # bytes of each open pack, the joining newlines included
    for rec in records:
        where = (rec.topic, rec.key)
        group = open_packs.setdefault(where, [])
        if group and sizes[where] + 1 + len(rec.value) > max_bytes:
            yield _pack(group)
            group = open_packs[where] = []
        sizes[where] = sizes[where] + 1 + len(rec.value) if group else len(rec.value)
        group.append(rec)
        if len(group) >= size:
            yield _pack(group)
            del open_packs[where]
    for group in open_packs.values():
        yield _pack(group)


def _pack(group: list[LogRecord]) -> LogRecord:
    first = group[0]
    if len(group) == 1:
        return first
    return LogRecord(first.topic, first.key, max(r.ts for r in group), b"\n".join(r.value for r in group))


def unpack_records(packs: Iterable[LogRecord], max_bytes: int = MAX_BYTES,
                   max_lines: int = MAX_LINES) -> Iterator[LogRecord]:
    """The log a pack stream stands for: each event as its own record with the pack's timestamp.

    The oracle reads this equivalent log to check a run that was fed packs. A message the worker
    refuses whole (over ``max_bytes``, or a pack of more than ``max_lines`` lines) stays one record,
    so the oracle refuses the same events (the first as ``oversized``; the second it cannot name, as it
    knows no packs: see ``message_units``).
    """
    for rec in packs:
        units = message_units(rec.value, max_bytes, max_lines)
        if isinstance(units, Rejection) or len(units) == 1:
            yield rec
        else:
            for value in units:
                yield LogRecord(rec.topic, rec.key, rec.ts, value)
