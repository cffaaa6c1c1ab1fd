"""Imports of real-world clickstream datasets into the recorded log format.

``streamproc import --format F IN --out OUT`` writes a log that ``replay``, ``reconcile`` and
``demo --log`` take like any recorded one. Formats: ``taobao-userbehavior`` and ``rees46`` (the public
datasets, see their modules for the mapping) and ``generic`` (any CSV or JSON lines, by a field-map
file). What is common to all -- sorting, visits, validation, rejected lines -- is in ``core``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamproc.boards.dimension import Streamer, streamers_to_jsonl
from streamproc.logs.importers import generic, rees46, taobao
from streamproc.logs.importers.core import ImportFailed, Report, run_import

FORMATS = (taobao.NAME, rees46.NAME, generic.NAME)
PLATFORM = {taobao.NAME: "taobao", rees46.NAME: "rees46", generic.NAME: ""}


def import_file(
    fmt: str,
    input: str | Path,
    out: str | Path,
    *,
    field_map: str | Path | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    streamers_out: str | Path | None = None,
    rejects: str | Path | None = None,
    strict: bool = False,
    visit_idle_ms: int = 600_000,
) -> dict[str, Any]:
    """Convert ``input`` to the log ``out``; returns the import summary (see ``core.Report``).

    ``from_ms``/``to_ms`` bound event time (rows outside are rejected and reported); for the Taobao
    dataset they default to its documented nine days.
    """
    if fmt == taobao.NAME:
        rows, prefix = taobao.parser(), taobao.PREFIX
        if from_ms is None and to_ms is None:
            from_ms, to_ms = taobao.WINDOW
    elif fmt == rees46.NAME:
        rows, prefix = rees46.parser(), rees46.PREFIX
    elif fmt == generic.NAME:
        if not field_map:
            raise ImportFailed("--format generic needs --map FILE")
        fmap = generic.load_map(field_map)
        rows, prefix = generic.parser(fmap), fmap.id_prefix
    else:
        raise ImportFailed(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if field_map and fmt != generic.NAME:
        raise ImportFailed("--map is only for --format generic")
    report = Report(format=fmt, input=str(input), out=str(out))
    rooms = run_import(report, rows, prefix=prefix, from_ms=from_ms, to_ms=to_ms, visit_idle_ms=visit_idle_ms,
                       rejects=str(rejects) if rejects else None, strict=strict)
    if streamers_out:  # the dimension in the generator's format: rooms have no place in these datasets
        streamers_to_jsonl((Streamer(room, f"{fmt} {room}", PLATFORM[fmt], "", "", "", category)
                            for room, category in sorted(rooms.items())), streamers_out)
    return report.to_dict()


__all__ = ["FORMATS", "ImportFailed", "import_file"]
