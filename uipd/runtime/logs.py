"""Logging setup from ``[log]``: human-readable lines or one JSON object per line, per-logger levels.

Nothing in uipd logs per delivered message: a publish, a delivery or a frame written is never a
log line at any level (counts are in the metrics, ``uipd.runtime.metrics``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO

import orjson

from uipd.config import LogConfig

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Loggers whose info lines duplicate ours or are too chatty; lifted to warning unless ``levels`` says otherwise.
_QUIET = ("uipd.api.http", "trio-websocket")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``msg``, and ``exc``
    (the formatted traceback) when the record carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


_handler: logging.Handler | None = None
_levelled: set[str] = set()


def installed() -> bool:
    """Whether :func:`setup` configured logging in this process."""
    return _handler is not None


def setup(config: LogConfig, stream: IO[str] | None = None) -> None:
    """Install (or, on a config reload, replace) uipd's handler on the root logger and apply the levels."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    _handler = handler
    root.setLevel(getattr(logging, config.level.upper()))
    for name in _levelled - set(config.levels):  # a reload removed a per-logger level
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name, level in config.levels.items():
        logging.getLogger(name).setLevel(getattr(logging, level.upper()))
    _levelled.clear()
    _levelled.update(config.levels)
