"""Packs: several events of one streamer in one Kafka message, as JSON lines.

Producers that batch save the broker and the worker the per-message cost (the worker reads a pack as
its events, in order, each judged on its own). A pack holds events of one (topic, key) only, so per-key
order and partitioning are those of the unpacked stream; its record timestamp is that of its newest
event, when it is sent.

A pack is a message like any other for the size limit: ``message_units`` is the one statement of what
the worker judges in a message, used by the processor and by ``unpack_records`` (the oracle's view of
a pack stream).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from .events import Rejection, is_pack, split_pack
from .logfile import LogRecord
from .settings import Settings

MAX_BYTES = Settings.max_message_bytes  # the defaults of STREAMPROC_MAX_MESSAGE_BYTES / _MAX_PACK_LINES
MAX_LINES = Settings.max_pack_lines


def message_units(value: bytes | None, max_bytes: int, max_lines: int) -> list[bytes | None] | Rejection:
    """What is judged on its own in one message: the message itself, or each line of a pack.

    Size comes before any parsing, so one message never costs more than a bounded amount of work or
    yields more than ``max_lines`` dead letters: a message over ``max_bytes`` stays one unit, newlines
    or not (``events.decode`` calls it ``oversized``), and a pack of more than ``max_lines`` lines is
    refused whole, as ``oversized`` too (returned as that Rejection).
    """
    if not value or b"\n" not in value or len(value) > max_bytes or not is_pack(value):
        return [value]
    lines = split_pack(value)
    if len(lines) > max_lines:
        return Rejection("oversized", f"pack of {len(lines)} lines > {max_lines} (max_pack_lines)")
    return lines


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
