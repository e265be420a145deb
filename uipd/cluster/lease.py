"""Running a source on one node of the cluster: a lease in Redis says which.

A node that holds the lease runs the source and renews the lease every third of its time to
live.  The source runs under a local deadline, ``ttl - margin`` after the last renewal Redis
confirmed (counted from when it was sent): when renewals fail or hang (Redis blackholed) the
source is cancelled at that deadline whatever the renewal is doing, so it has stopped before the
lease can expire and another node start it.  A node that does not hold it retries as often, so
when the holder dies its lease runs out and another node takes the source over within about
``ttl`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

log = logging.getLogger(__name__)


class Leases(Protocol):
    async def acquire(self, name: str, ttl: float) -> bool: ...

    async def renew(self, name: str, ttl: float) -> bool: ...

    async def release(self, name: str) -> None: ...


LEASE_MARGIN = 0.25
"""The source stops when this fraction of the ttl is left since the last confirmed renewal: room
for the source's cancellation and for the clocks of this host and Redis to differ."""


async def run_with_lease(
    leases: Leases,
    name: str,
    ttl: float,
    run: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run()`` whenever this node holds the lease ``name``; forever (until cancelled).

    The ``leases`` calls are expected to be bounded (the Redis broker's ``command_timeout``);
    should one hang anyway, the deadline still stops the source in time."""
    task_status.started()
    step = ttl / 3
    while True:
        asked_at = trio.current_time()
        try:
            held = await leases.acquire(name, ttl)
        except Exception as exc:  # Redis away: not held; the broker logs the outage
            log.debug("lease %s: cannot acquire (%r)", name, exc)
            held = False
        if held:
            log.info("source %s: this node holds its lease and runs it", name)
            why = await _hold(leases, name, ttl, run, asked_at)
            if why:
                log.warning("source %s: %s; another node may run it", name, why)
            else:
                log.info("source %s: finished; lease given up", name)
        await trio.sleep(step)


async def _hold(leases: Leases, name: str, ttl: float, run: Callable[[], Awaitable[None]], asked_at: float) -> str:
    """Run the source while the lease is ours; returns why it was stopped ("" if it finished)."""
    margin = ttl * LEASE_MARGIN
    # The lease's ttl starts when Redis runs the command, after it was sent: counting from the
    # sending errs on the safe side.
    deadline = trio.CancelScope(deadline=asked_at + ttl - margin)
    why = ""
    try:
        with deadline:
            async with trio.open_nursery() as nursery:

                async def run_then_stop() -> None:
                    await run()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run_then_stop)
                while True:
                    await trio.sleep(ttl / 3)
                    asked_at = trio.current_time()
                    try:
                        ok = await leases.renew(name, ttl)
                    except Exception as exc:  # unknown: keep running while the deadline allows
                        log.debug("lease %s: renewal failed (%r)", name, exc)
                        continue
                    if not ok:  # expired, or another node holds it now: stop at once
                        why = "lease lost (not renewed in time, or taken by another node); source stopped"
                        nursery.cancel_scope.cancel()
                        break
                    deadline.deadline = asked_at + ttl - margin
        if deadline.cancelled_caught:
            why = f"lease not renewed within {ttl - margin:.2f} s; source stopped before the lease's ttl ends"
        return why
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await leases.release(name)
            except Exception:
                pass


def leases_of(broker: Any) -> Leases | None:
    """The broker's leases, if it has any (the memory broker has none: every source just runs)."""
    return broker if hasattr(broker, "acquire") else None
