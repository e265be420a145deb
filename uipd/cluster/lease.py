"""Running a source on one node of the cluster: a lease in Redis says which.

A node that holds the lease runs the source and renews the lease every third of its time to
live; when it cannot renew for most of that time it stops the source, so two nodes never run
it long at once.  A node that does not hold it retries as often, so when the holder dies its
lease runs out and another node takes the source over within about ``ttl`` seconds.
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


async def run_with_lease(
    leases: Leases,
    name: str,
    ttl: float,
    run: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run()`` whenever this node holds the lease ``name``; forever (until cancelled)."""
    task_status.started()
    step = ttl / 3
    while True:
        try:
            held = await leases.acquire(name, ttl)
        except Exception as exc:  # Redis away: not held; the broker logs the outage
            log.debug("lease %s: cannot acquire (%r)", name, exc)
            held = False
        if held:
            log.info("source %s: this node holds its lease and runs it", name)
            await _hold(leases, name, ttl, run)
            log.info("source %s: lease given up; another node may run it", name)
        await trio.sleep(step)


async def _hold(leases: Leases, name: str, ttl: float, run: Callable[[], Awaitable[None]]) -> None:
    renewed_at = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:

            async def run_then_stop() -> None:
                await run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_stop)
            while True:
                await trio.sleep(ttl / 3)
                try:
                    ok = await leases.renew(name, ttl)
                except Exception:
                    ok = None  # unknown: keep running while the lease may still be ours
                if ok:
                    renewed_at = trio.current_time()
                elif ok is False or trio.current_time() - renewed_at > ttl * 2 / 3:
                    nursery.cancel_scope.cancel()
                    return
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await leases.release(name)
            except Exception:
                pass


def leases_of(broker: Any) -> Leases | None:
    """The broker's leases, if it has any (the memory broker has none: every source just runs)."""
    return broker if hasattr(broker, "acquire") else None
