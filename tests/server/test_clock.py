"""``uipd.server.clock`` is the one place the daemon's shell reads the system clock: no module of
the shell (``uipd/server``, ``uipd/api``, ``uipd/sources``, ``uipd/runtime``) reads ``time.time``
or ``time.monotonic`` itself.  Trio's clock (deadlines, timers) and the publisher's
``perf_counter`` are the readings the clock's docstring names as read elsewhere on purpose."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

from uipd.server import clock

PACKAGE = Path(__file__).resolve().parents[2] / "uipd"
SHELL = ("server", "api", "sources", "runtime")
SYSTEM_CLOCKS = {"time", "monotonic", "time_ns", "monotonic_ns"}


def _clock_reads(path: Path) -> list[str]:
    """Where ``path`` reads the system clock: ``time.time``/``time.monotonic`` (any use, also
    passed as a value) or one of them imported from :mod:`time`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in SYSTEM_CLOCKS and isinstance(node.value, ast.Name) and node.value.id == "time":
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: time.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: from time import {a.name}" for a in node.names if a.name in SYSTEM_CLOCKS]
    return found


def test_the_shell_reads_the_system_clock_only_through_uipd_server_clock() -> None:
    shell = [p for folder in SHELL for p in sorted((PACKAGE / folder).rglob("*.py")) if p != PACKAGE / "server" / "clock.py"]
    assert len(shell) > 20  # the folders are there (a moved folder would make this pass vacuously)
    assert [read for path in shell for read in _clock_reads(path)] == []


def test_the_clock_readers_are_the_system_clocks_themselves() -> None:
    """The receive loop calls ``clock.monotonic`` per ping and pong: it must cost what
    ``time.monotonic`` did (the same function, no wrapper)."""
    assert clock.monotonic is time.monotonic and clock.wall is time.time
    before = time.time()
    instant = clock.now()
    assert before - 1 < clock.wall() and abs(instant.mono - time.monotonic()) < 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", instant.iso), instant.iso
