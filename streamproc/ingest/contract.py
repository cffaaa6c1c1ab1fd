"""Render the event contract of ``events.FIELDS`` as JSON Schema (``schemas/events/*.json``).

Producers in other languages validate against these files; a test keeps them equal to the rules the
worker runs, so the two never drift.
"""

from __future__ import annotations

from typing import Any

from streamproc.ingest.events import FIELDS, ID_MAX_LEN, TOPIC_OF_TYPE

_TITLES = {"view": "A viewer enters or leaves a live room", "like": "A burst of likes in a live room",
           "order": "An order paid or refunded in a live room"}


def schema_for(kind: str) -> dict[str, Any]:
    props: dict[str, Any] = {"type": {"const": kind}}
    for name, check, lo, hi in FIELDS[kind]:
        if check == "id":
            props[name] = {"type": "string", "minLength": 1, "maxLength": ID_MAX_LEN}
        elif check == "enum":
            props[name] = {"enum": list(lo)}
        elif lo == hi:
            props[name] = {"const": lo}
        else:
            props[name] = {"type": "integer", "minimum": lo, "maximum": hi,
                           "description": "an integer literal: 12.0 is refused, which JSON Schema cannot say"}
            if check == "money":
                props[name]["description"] = "integer fen (1/100 yuan) as an integer literal, never a float"
    props["ts"]["description"] = "event time, epoch milliseconds"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://streamproc.dev/schemas/events/{kind}.json",
        "title": _TITLES[kind],
        "description": f"Published to {TOPIC_OF_TYPE[kind]}, keyed by streamer_id. Extra properties are allowed.",
        "type": "object",
        "required": ["type"] + [f[0] for f in FIELDS[kind]],
        "properties": props,
    }
