"""Log output for every command: human text (default) or one JSON object per line.

JSON lines are for log pipelines (Loki, Elasticsearch, Vector) that index fields: a record's ``extra``
fields are emitted as top-level keys, and streamproc names them like its metrics (``event="flush"``,
``flush_rows``, ``flush_duration_seconds``, ``sink_buffered_rows``), so a log line and a Prometheus
series about the same thing share one vocabulary. Faust and every other library log through the root
logger and so come out in the same format.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import datetime, timezone
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def check_format(log_format: str) -> str:
    if log_format not in FORMATS:
        raise ValueError(f"STREAMPROC_LOG_FORMAT={log_format!r}: expected one of {', '.join(FORMATS)}")
    return log_format


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root logger; Faust's worker takes the same dict."""
    formatter = ({"()": f"{__name__}.JsonFormatter"} if check_format(log_format) == "json"
                 else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"streamproc": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "streamproc",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure(level: str, log_format: str) -> None:
    """Set up the root logger for a command (the worker re-applies it through Faust's own set-up)."""
    logging.config.dictConfig(logging_config(level, log_format))
