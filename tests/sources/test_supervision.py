"""Sources run in the daemon's nursery: they publish through the same path as the API, a failing
source is restarted with backoff, and readiness waits for every source."""

import pytest
import trio
from attrs import frozen

from tests.conftest import api_client, connect
from uipd.config import SourceConfig
from uipd.core.hub import Hub
from uipd.core.topics import TopicTable
from uipd.plugin import SourceType, hookimpl
from uipd.server.clock import now
from uipd.sources.publisher import HubPublisher
from uipd.sources.registry import ConfiguredSource
from uipd.sources.supervisor import SourceStatus, supervise


@frozen
class NoOptions:
    pass


def inline_plugin(name, make_source):
    """A plugin object registered directly (not through an entry point) providing one source type."""

    class Plugin:
        @hookimpl
        def uipd_source_types(self):
            return [SourceType(name, NoOptions, lambda options: make_source())]

    return name, Plugin()


async def test_source_updates_reach_clients_and_state(daemon_factory):
    async with daemon_factory({"server": {"topics": []}, "sources": {"count": {"plugin": "counter", "interval": 0.02, "alert_every": 3}}}) as d:
        c = await connect(d)
        seen = [await c.recv_json() for _ in range(8)]
        updates = [m for m in seen if m["type"] == "UPDATE"]
        alerts = [m for m in seen if m["type"] == "ALERT"]
        assert updates and alerts
        assert all(m["topic"] == "counter" for m in seen)
        assert [m["seq"] for m in seen] == sorted(m["seq"] for m in seen)
        async with api_client(d) as http:
            stats = (await http.get("/api/stats")).json()
            assert stats["topics"]["counter"]["entities"] == 1
            assert stats["sources"]["count"]["ready"] is True
            assert (await http.get("/readyz")).status_code == 200


async def test_failing_source_is_restarted_with_backoff_and_daemon_keeps_serving(daemon_factory):
    async with daemon_factory({"sources": {"flaky": {"plugin": "counter", "interval": 0.02, "fail_times": 3, "restart_max_backoff": 0.05}}}) as d:
        c = await connect(d)
        runs = set()
        with trio.fail_after(10):
            while 4 not in runs:
                msg = await c.recv_json()
                runs.add(msg["data"][0]["run"])
        status = d.sources[0]
        assert status.errors == 3 and status.restarts == 3
        assert "failing on purpose" in status.last_error
        await c.send_json({"action": "ping"})
        assert (await c.recv_until(lambda m: m["type"] == "PONG"))["type"] == "PONG"


async def test_restart_waits_double_up_to_the_cap_and_start_over_after_a_healthy_run(autojump_clock):
    """The supervisor alone, in virtual time (all it does between runs is sleep): 0.5 s doubling up
    to ``restart_max_backoff``, and 0.5 s again after a run that lasted past a minute."""
    lasting = [0, 0, 0, 0, 0, 61, 0, None]  # how long each run lasts before it fails; None: it stays up
    starts = []
    up = trio.Event()

    class Flaky:
        topics = ("t",)

        async def run(self, publisher):
            starts.append(trio.current_time())
            lasts = lasting[len(starts) - 1]
            if lasts is None:
                up.set()
                await trio.sleep_forever()
            await trio.sleep(lasts)
            raise RuntimeError("upstream down")

    cs = ConfiguredSource("flaky", SourceConfig("flaky", "flaky", {}, restart_max_backoff=3.0), Flaky(), ("t",))
    status = SourceStatus("flaky", HubPublisher(Hub(TopicTable.of(["t"])), now, topics=frozenset({"t"})))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, cs, status)
        with trio.fail_after(600):
            await up.wait()
        nursery.cancel_scope.cancel()
    waits = [later - (start + lasts) for start, lasts, later in zip(starts, lasting, starts[1:])]
    assert waits == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0, 0.5, 1.0])
    assert (status.errors, status.restarts, status.running) == (7, 7, False)


async def test_readyz_waits_for_sources(daemon_factory):
    go = trio.Event()

    class Slow:
        topics = ("slow",)

        async def run(self, publisher):
            await go.wait()
            publisher.ready()
            await trio.sleep_forever()

    async with daemon_factory({"sources": {"s": {"plugin": "slowpoke"}}}, plugins=(inline_plugin("slowpoke", Slow),)) as d:
        async with api_client(d) as http:
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["waiting_for"] == ["s"]
            go.set()
            with trio.fail_after(5):
                while not d.sources[0].ready:
                    await trio.sleep(0.01)
            assert (await http.get("/readyz")).status_code == 200


async def test_a_source_may_publish_only_its_own_topics(daemon_factory):
    class Rogue:
        topics = ("mine",)
        error = None

        async def run(self, publisher):
            try:
                publisher.update("accidents", [{"id": "x"}])
            except ValueError as exc:
                Rogue.error = exc
            publisher.ready()
            await trio.sleep_forever()

    async with daemon_factory({"sources": {"r": {"plugin": "rogue"}}}, plugins=(inline_plugin("rogue", Rogue),)) as d:
        with trio.fail_after(2):
            while Rogue.error is None:
                await trio.sleep(0.01)
        assert "does not provide topic 'accidents'" in str(Rogue.error)
        assert d.hub.topics.get("accidents").seq == 0
