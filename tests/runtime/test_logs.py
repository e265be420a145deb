"""``[log]``: text or JSON lines, per-logger levels, applied again on reload."""

from __future__ import annotations

import io
import json
import logging

import pytest

from uipd.runtime import logs
from uipd.config import LogConfig


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    if logs._handler is not None:
        root.removeHandler(logs._handler)
        logs._handler = None
    root.setLevel(saved[0])
    for name in ("uipd.server", "uipd.sources", *logs._QUIET):
        logging.getLogger(name).setLevel(logging.NOTSET)
    logs._levelled.clear()


def test_json_lines_with_exception(restore_logging):
    out = io.StringIO()
    logs.setup(LogConfig(level="info", format="json"), stream=out)
    logging.getLogger("uipd.test").info("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uipd.test").exception("it failed")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["msg"] == "hello world" and records[0]["level"] == "info" and records[0]["logger"] == "uipd.test"
    assert records[0]["ts"].endswith("Z")
    assert records[1]["level"] == "error" and "ValueError: boom" in records[1]["exc"]


def test_text_and_per_logger_levels(restore_logging):
    out = io.StringIO()
    logs.setup(LogConfig(level="warning", levels={"uipd.server": "debug"}), stream=out)
    logging.getLogger("uipd.server.connection").debug("shown")
    logging.getLogger("uipd.sources").info("hidden")
    text = out.getvalue()
    assert "DEBUG   uipd.server.connection: shown" in text and "hidden" not in text
    # a reload without the per-logger level takes it away again
    out2 = io.StringIO()
    logs.setup(LogConfig(level="warning"), stream=out2)
    logging.getLogger("uipd.server.connection").debug("now hidden")
    assert out2.getvalue() == "" and out.getvalue() == text
