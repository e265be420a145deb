"""Sources run in the daemon's nursery: they publish through the same path as the API, a failing
source is restarted with backoff, and readiness waits for every source."""

import trio
from attrs import frozen

from tests.conftest import api_client, connect
from uipd.plugin import SourceType, hookimpl


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
    async with daemon_factory({"sources": {"flaky": {"plugin": "counter", "interval": 0.02, "fail_times": 3, "restart_max_backoff": 1.0}}}) as d:
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


async def test_readyz_waits_for_sources(daemon_factory):
    class Slow:
        topics = ("slow",)

        async def run(self, publisher):
            await trio.sleep(0.5)
            publisher.ready()
            await trio.sleep_forever()

    async with daemon_factory({"sources": {"s": {"plugin": "slowpoke"}}}, plugins=(inline_plugin("slowpoke", Slow),)) as d:
        async with api_client(d) as http:
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["waiting_for"] == ["s"]
            await trio.sleep(0.7)
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
