"""Running the real ``uipd`` console script and checking how a subcommand fails."""

from __future__ import annotations

import subprocess

import trio

from tests.runtime.support import ROOT, UIPD

KEY = "api-key-1"
TOKEN = "ws-token-1"
CONFIG = {"api": {"key": KEY}, "auth": {"mode": "token", "tokens": [TOKEN]}}
"""A daemon whose API needs :data:`KEY` and whose WebSocket needs :data:`TOKEN`."""


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """``uipd ARGS`` to the end (text output), for commands that need no daemon of the test's."""
    return subprocess.run([UIPD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, **kw)


async def uipd(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``uipd ARGS`` without blocking the test's trio loop (its daemon runs in the same loop)."""
    return await trio.run_process([UIPD, *args], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False, stdin=stdin)


def one_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one line and no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def one_line_failure(r: subprocess.CompletedProcess, command: str, *needles: str, status: int = 1) -> None:
    """An operator command's failure: exit ``status`` (1; 2 for a wrong argument), one line
    ``uipd COMMAND: ...`` naming ``needles``."""
    err = r.stderr.decode()
    assert r.returncode == status, (r.returncode, err)
    line = one_line(err)
    assert line.startswith(f"uipd {command}: ")
    for needle in needles:
        assert needle in line, err
