"""SIGHUP before the daemon's reload watcher exists.

SIGHUP's default action ends the process (exit 129, nothing logged), and the daemon installs its
reload watcher only once it listens: some 0.8 s of imports, config and startup after ``uipd run``
began.  A reload sent in that window (``systemctl reload`` right after a start, a config tool
signalling every uipd) would kill it.  From the very start of ``uipd run`` a SIGHUP is recorded
instead, and the daemon applies it once its watcher is installed: the config read at start may
predate the edit the signal announced."""

from __future__ import annotations

import signal
from types import FrameType

_received = False


def _record(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True


def defer() -> None:
    """Record SIGHUP instead of dying of it, until something installs its own handler."""
    signal.signal(signal.SIGHUP, _record)


def received() -> bool:
    """Whether a SIGHUP came while deferred (and so is still to be applied)."""
    return _received
