"""The one place the daemon's shell reads the system clock: every time it hands the core, and
every wall-clock or monotonic reading of the shell (``monotonic``, ``wall``, ``now``).

What reads another clock, on purpose:

- Trio's clock (``trio.current_time()``, ``move_on_after``, ``CancelScope.deadline``,
  ``trio.sleep``): deadlines, timers and the durations measured against them (a source's run, a
  lease's renewal, the accept loop's episode, systemd's watchdog).  They must be on the clock
  trio's scheduler compares deadlines with, which tests replace with ``trio.testing.MockClock``.
- ``time.perf_counter`` in :mod:`uipd.sources.publisher`: the cost of a publish call for its
  histogram, a profiler's reading that no protocol decision sees.
- ``cpu_time`` (``time.thread_time``, here): the CPU a compression took, for its metric only.
"""

from __future__ import annotations

import random
import time
from time import monotonic  # seconds for durations (Instant.mono); as is, so a call costs what it did

from uipd.core.clock import Instant

__all__ = ["SPREAD", "cpu_time", "iso_utc", "monotonic", "now", "spread", "wall"]

wall = time.time
"""Unix time in seconds: credentials' expiry times are wall-clock times."""

cpu_time = time.thread_time
"""CPU seconds of the calling thread (a compression run in a worker thread is measured there)."""

SPREAD = 0.25
"""The share of a per-connection deadline drawn at random (see ``spread``)."""

_spread = random.Random()


def iso_utc(t: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, like JavaScript's toISOString()."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def now() -> Instant:
    """This instant, as the core takes it (monotonic seconds and the wire's UTC time)."""
    return Instant(monotonic(), iso_utc(wall()))


def spread(timeout: float) -> float:
    """A per-connection deadline from the last quarter of ``timeout`` (0.75-1.0 of it).  With one
    fixed figure, connections opened together (a slowloris client opens hundreds at once) were all
    cut in the same scheduler round and all reconnected at once: each such instant stalled every
    other client and the API for a few hundred ms.  Spread, the same work comes a little at a time."""
    return timeout * (1.0 - SPREAD * _spread.random())
