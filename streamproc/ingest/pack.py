"""Packs: several events of one streamer in one Kafka message, as JSON lines.

Producers that batch save the broker and the worker the per-message cost (the worker reads a pack as
its events, in order, each judged on its own). A pack holds events of one (topic, key) only, so per-key
order and partitioning are those of the unpacked stream; its record timestamp is that of its newest
event, when it is sent.

A pack is a message like any other for the size limit: ``message_units`` is the one statement of what
the worker judges in a message, used by the processor and by ``logs/packs.py`` (packing a log the way a
producer would, and the oracle's unpacked view of a pack stream).
"""

from __future__ import annotations

from streamproc.ingest.events import Rejection, is_pack, split_pack
from streamproc.settings import Settings

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
