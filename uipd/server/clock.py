"""The one place the daemon reads the clock for the core."""

from __future__ import annotations

import time

from uipd.core.clock import Instant


def iso_utc(t: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, like JavaScript's toISOString()."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def now() -> Instant:
    return Instant(time.monotonic(), iso_utc(time.time()))
