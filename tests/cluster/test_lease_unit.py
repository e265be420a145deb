"""Source leases against a fake store, on trio's autojump clock: a source stops before its lease's
ttl ends whatever the renewal does (hangs, fails, is refused), and keeps running while renewals work."""

import pytest
import trio

from uipd.cluster.lease import LEASE_MARGIN, run_with_lease

TTL = 3.0


class FakeLeases:
    """Grants the first acquire only; renewals answer as ``renewal`` says from the ``after``-th on."""

    def __init__(self, renewal: str, after: int = 0) -> None:
        self.renewal, self.after = renewal, after
        self.acquires = self.renewals = self.releases = 0
        self.confirmed_at: float | None = None
        """When the last renewal that succeeded was sent."""

    async def acquire(self, name: str, ttl: float) -> bool:
        self.acquires += 1
        if self.acquires == 1:
            self.confirmed_at = trio.current_time()
            return True
        return False

    async def renew(self, name: str, ttl: float) -> bool:
        self.renewals += 1
        sent = trio.current_time()
        if self.renewals <= self.after:
            self.confirmed_at = sent
            return True
        if self.renewal == "hang":  # a blackholed Redis: TCP up, no answer ever
            await trio.sleep_forever()
        if self.renewal == "raise":
            raise ConnectionError("Redis unreachable")
        return False

    async def release(self, name: str) -> None:
        self.releases += 1


async def run_source(leases: FakeLeases, *, watch: float) -> tuple[float, float | None]:
    """Run a source under the lease for ``watch`` seconds; when it first started, and when it first
    stopped (None: it ran until the end of the watch)."""
    started: list[float] = []
    stopped: list[float] = []

    async def source() -> None:
        started.append(trio.current_time())
        try:
            await trio.sleep_forever()
        finally:
            stopped.append(trio.current_time())

    end = trio.current_time() + watch
    with trio.move_on_after(watch):
        await run_with_lease(leases, "src", TTL, source)
    return started[0], (stopped[0] if stopped[0] < end else None)


@pytest.mark.parametrize("renewal", ["hang", "raise"])
async def test_a_source_stops_before_its_lease_expires_when_renewals_hang_or_fail(autojump_clock, renewal):
    leases = FakeLeases(renewal, after=2)
    started, stopped = await run_source(leases, watch=4 * TTL)
    assert stopped is not None, "the source was still running long after its lease expired"
    expires = leases.confirmed_at + TTL  # the earliest another node could acquire it
    assert stopped < expires
    assert stopped == pytest.approx(leases.confirmed_at + TTL * (1 - LEASE_MARGIN))
    assert leases.releases == 1  # given back (bounded) once stopped


async def test_a_refused_renewal_stops_the_source_at_once(autojump_clock):
    leases = FakeLeases("refused")
    started, stopped = await run_source(leases, watch=4 * TTL)
    assert stopped == pytest.approx(started + TTL / 3)  # the first renewal
    assert leases.acquires > 1  # and the node keeps trying to get it back


async def test_a_source_keeps_running_while_renewals_succeed(autojump_clock):
    leases = FakeLeases("ok", after=10**6)
    started, stopped = await run_source(leases, watch=10 * TTL)
    assert stopped is None  # only the end of the test stopped it
    assert leases.renewals >= 29 and leases.acquires == 1
