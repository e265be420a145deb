"""The hub counters that were counted and never exported (issue 13) are in GET /metrics."""

from __future__ import annotations

from tests.conftest import connect
from tests.runtime.support import metric
from tests.runtime.test_metrics import scrape


async def test_subscription_limit_refusals_are_exported(daemon_factory):
    async with daemon_factory({"server": {"max_subscriptions": 1}}) as d:
        c = await connect(d)
        await c.send_json({"action": "subscribe", "topics": ["weather", "cameras"]})
        assert (await c.recv_json())["error"]["code"] == "too_many_subscriptions"
        m = await scrape(d)
        assert metric(m, "uipd_subscription_limit_refusals_total") == 1 == d.hub.counters.subscription_limit


async def test_expiry_forbidden_and_dropped_update_counts_are_exported(daemon_factory):
    async with daemon_factory() as d:
        client = await connect(d)  # kept: its session is the connected slow consumer below
        m = await scrape(d)
        for name in ("uipd_token_expiry_closes_total", "uipd_forbidden_requests_total", "uipd_dropped_updates_total"):
            assert metric(m, name) == 0
        c = d.hub.counters
        c.expired_closes, c.forbidden = 3, 4
        (session,) = d.hub.sessions.values()
        session.outbound.dropped_updates = 5  # a connected slow consumer's
        c.dropped_updates = 6  # those of clients that are gone
        m = await scrape(d)
        assert metric(m, "uipd_token_expiry_closes_total") == 3
        assert metric(m, "uipd_forbidden_requests_total") == 4
        assert metric(m, "uipd_dropped_updates_total") == 11
