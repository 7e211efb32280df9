"""Logging: the `[log]` table, JSON lines when asked for, and the fields every line may carry.

`format = "json"` writes one JSON object a line (`time`, `level`, `logger`, `message`, and
`device_id` / `request_id` where known, `exc` with a traceback). Those two fields come from the
record (`extra={"device_id": ...}`) or else from context variables that the code handling a
request or a device's message sets, so a line logged deep inside knows whom it is about.
`access = true` logs one line per HTTP request on the `fleetstate.access` logger.
"""

import contextvars
import json
import logging
import sys
from typing import Any

from fleetstate.config import LogConfig
from fleetstate.domain.clock import now_text

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
DEVICE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("device_id", default=None)
FIELDS = ("device_id", "request_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
access_log = logging.getLogger("fleetstate.access")


def device_context(device_id: str) -> None:
    """Name the device the current task works for, for every line it logs from now on."""
    DEVICE_ID.set(device_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": now_text(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in (("device_id", DEVICE_ID), ("request_id", REQUEST_ID)):
            value = getattr(record, name, None) or var.get()
            if value is not None:
                line[name] = value
        for name in ("method", "route", "path", "status", "duration_ms", "remote"):
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, config: LogConfig) -> None:
    """The process's logging, once at start (`fleetstate serve`)."""
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Access lines are INFO: with `access = true` they show even when the level is WARNING.
    access_log.setLevel(logging.INFO if config.access else logging.WARNING)
