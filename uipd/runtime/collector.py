"""The garbage collector's policy for a process full of long-lived connections.

CPython's collector walks every tracked object of a generation it collects, and its full pass
(the oldest generation) runs whenever that generation has grown by a quarter.  An idle connection
is ~50 tracked objects (its task's coroutines, its cancel scopes, its session), all long-lived:
while 19,000 clients connected, the full passes grew with them (0.1 s, 0.2 s ... 0.6 s each at
5,000 clients), and together took about half of the time to open them all; idle, the objects
each pong left behind still set one off every few seconds, most of an idle daemon's CPU.

So: once a second the young generations are collected (cheap: they hold only what was made since;
skipped when that second made almost nothing it did not free, see YOUNG_GARBAGE_FLOOR) and
everything still alive is frozen (``gc.freeze``): moved where no collection looks.  A full pass
then costs only what is new.  What frozen objects become garbage is freed by reference counting
as ever, except cycles (a closed connection leaves ~4 objects in them): those wait for a
*reclaim*, a full pass over everything (unfreeze, collect, freeze).  It walks ~50 objects per
open connection and ~4 per closed one, and stalls the loop meanwhile (~4 s with 12,000 open on
a busy 2-core box), so it waits until the connections closed since the last one reach
RECLAIM_RATIO times those open (and RECLAIM_FLOOR): its cost per close stays ~10 object visits,
what waits stays below the open connections' own objects.  Nor does it run while more than
RECLAIM_FLOOR connections closed in the last second: when every client leaves at once (a deploy,
a network cut) it runs once, after the storm, not in the middle of the teardown.  A
second trigger bounds what other cycles (API requests, sources) can leave: the frozen objects
doubled since the last reclaim, looked at once per RECLAIM_MIN_INTERVAL (counting them walks
them all: ``gc.get_freeze_count`` once a second cost more than the collections it saved).

Only ``uipd run`` turns this on (``Daemon(manage_gc=True)``): it changes the whole process, and a
test process running many daemons keeps the interpreter's own collector.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import trio
from attrs import define

log = logging.getLogger(__name__)

FREEZE_INTERVAL = 1.0
"""Seconds between two freezes: an object alive this long is taken as long-lived."""
YOUNG_THRESHOLD = 100_000
"""Allocations between two collections of the youngest generation (CPython's default: 700).  A
handshake makes a few hundred tracked objects: at 700, a connection storm ran a young
collection for about every second connection; at 20,000, four or five a second, each finding
nothing (the freeze each second keeps the young generations to one second's objects anyway)."""
YOUNG_GARBAGE_FLOOR = 2000
"""Net tracked allocations since the last freeze (``gc.get_count()[0]``: made minus freed) below
which the second's young objects are frozen without a collection.  Garbage cycles are never
freed, so they show in that count; live objects that replaced freed ones do not.  An idle client
at 19,000 leaves ~17 young live objects per pong (the coroutines and closures of its next
wait), 32,000 a second that a ``collect(1)`` walked in ~30 ms, every second, to find nothing."""
YOUNG_BACKOFF = 10.0
"""Seconds between two young collections while they find nothing.  A connection storm's second
makes ~90,000 tracked objects that live on (the new connections): a collection walked them in
~50-100 ms to find no garbage, every second of the storm, a tenth of the time to open them all.
Once a collection finds garbage, they run every second again until one finds none."""
RECLAIM_FLOOR = 1000
"""Connections closed before a reclaim is considered at all."""
RECLAIM_RATIO = 8
"""A reclaim is due when the connections closed since the last one reach this many times those open."""
RECLAIM_MIN_INTERVAL = 60.0
"""Seconds between two looks at the frozen objects' growth."""


@define
class ReclaimPolicy:
    """When a full pass over the frozen objects is due (no clock, no gc: the decision only)."""

    closed_at_reclaim: int = 0
    closed_at_last_look: int = 0
    """``closed`` at the previous call: the closes of the last interval."""
    frozen_at_reclaim: int = 0
    looked_at: float = 0.0
    """When the frozen objects were last counted."""

    def due(self, closed: int, open_: int, frozen: Callable[[], int], now: float) -> bool:
        """``closed``: connections closed since start; ``open_``: open now; ``frozen()``: objects
        frozen now (called at most once per RECLAIM_MIN_INTERVAL); ``now``: trio's clock."""
        recent, self.closed_at_last_look = closed - self.closed_at_last_look, closed
        if closed - self.closed_at_reclaim >= max(RECLAIM_FLOOR, RECLAIM_RATIO * open_):
            return recent < RECLAIM_FLOOR
        if now - self.looked_at < RECLAIM_MIN_INTERVAL:
            return False
        self.looked_at = now
        return frozen() > 2 * self.frozen_at_reclaim

    def reclaimed(self, closed: int, frozen: int, now: float) -> None:
        self.closed_at_reclaim = self.closed_at_last_look = closed
        self.frozen_at_reclaim, self.looked_at = frozen, now


@define
class YoungPolicy:
    """When the young generations are collected before a freeze (the decision only): when they
    may hold garbage (``net``: tracked objects made minus freed since the last freeze, at least
    YOUNG_GARBAGE_FLOOR) and either the last collection found some or YOUNG_BACKOFF has passed.
    Garbage frozen meanwhile waits for a reclaim (the frozen objects doubling triggers one)."""

    found_last: int = 1
    """What the last young collection found (1 at start: the first is not put off)."""
    collected_at: float = float("-inf")

    def due(self, net: int, now: float) -> bool:
        return net >= YOUNG_GARBAGE_FLOOR and (self.found_last > 0 or now - self.collected_at >= YOUNG_BACKOFF)

    def collected(self, found: int, now: float) -> None:
        self.found_last, self.collected_at = found, now


async def manage_collector(
    closed: Callable[[], int],
    open_: Callable[[], int],
    paused: Callable[[], bool],
    *,
    interval: float = FREEZE_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Collect the young generations and freeze the survivors every ``interval``; reclaim as
    :class:`ReclaimPolicy` says.  ``paused()``: skip (the drain: the process is about to exit, a
    reclaim of every closing connection's cycles would only delay it).  The interpreter's own
    thresholds are restored when this ends."""
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, thresholds[1], thresholds[2])
    policy, young = ReclaimPolicy(), YoungPolicy()
    policy.reclaimed(closed(), gc.get_freeze_count(), trio.current_time())
    task_status.started()
    try:
        while True:
            await trio.sleep(interval)
            if paused():
                continue
            if policy.due(closed(), open_(), gc.get_freeze_count, trio.current_time()):
                started = trio.current_time()
                gc.unfreeze()
                found = gc.collect()
                gc.freeze()
                policy.reclaimed(closed(), gc.get_freeze_count(), trio.current_time())
                log.debug("gc: reclaimed %d objects in %.0f ms; %d frozen", found, (trio.current_time() - started) * 1000, gc.get_freeze_count())
            else:
                now = trio.current_time()
                if young.due(gc.get_count()[0], now):
                    young.collected(gc.collect(1), now)
                gc.freeze()  # moves the young lists whole: no walk
    finally:
        gc.set_threshold(*thresholds)
