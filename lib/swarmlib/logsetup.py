"""Logging for every program: one line per event, text for people, JSON for Loki.

Fields of a JSON line: time, level, logger, message, and the ids passed in ``extra={"ids": {...}}``.
Secrets never reach a log line: callers never pass them, and the formatter masks any value whose
key looks like a secret as a last line of defence.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from typing import Any

_SECRET_WORDS = ("token", "key", "password", "secret", "authorization")

# Recent lines, for /api/logs: a bounded ring that every handler feeds.
RECENT: collections.deque[dict[str, Any]] = collections.deque(maxlen=2000)


def _clean_ids(ids: Any) -> dict[str, Any]:
    if not isinstance(ids, dict):
        return {}
    return {
        k: ("<redacted>" if any(w in k.lower() for w in _SECRET_WORDS) else v)
        for k, v in ids.items()
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_clean_ids(getattr(record, "ids", None)))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _clean_ids(getattr(record, "ids", None))
        if ids:
            line += " " + " ".join(f"{k}={v}" for k, v in ids.items())
        return line


class RingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        RECENT.append(
            {
                "time": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                **_clean_ids(getattr(record, "ids", None)),
            }
        )


def setup(log_format: str = "text", level: int = logging.INFO) -> None:
    if log_format not in ("text", "json"):
        from swarmlib.errors import ConfigError

        raise ConfigError(f"log_format: expected 'text' or 'json', got {log_format!r}")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.addHandler(RingHandler())
    root.setLevel(level)
    # Per-request access lines are noise at INFO; hypercorn logs them on its own loggers.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)
