"""uipd.client recovers by itself (PROTOCOL.md section 8), over real sockets: a link cut mid-stream
(a proxy drops it with no close frame) while messages are published through the API is resumed
with ``topics`` + ``since``: the state equals a fresh client's and every ALERT arrived exactly once;
a daemon restarted (a new epoch) is reported as ``alerts_lost``; a frame lost on a live link (a gap
in seq) is asked again and replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from tests.client.proxy import CuttableProxy
from tests.client.test_client import FAST, url, until
from tests.conftest import api_client
from uipd.client import Event, UipdClient, open_client
from uipd.runtime.daemon import Daemon

TOPICS = {"server": {"topics": ["news", "traffic"]}}


@asynccontextmanager
async def recording(client: UipdClient) -> AsyncIterator[list[Event]]:
    """Every event of the client, appended as it comes (the events are read: no backpressure)."""
    events: list[Event] = []
    async with trio.open_nursery() as nursery:

        async def collect() -> None:
            async for event in client.events():
                events.append(event)

        nursery.start_soon(collect)
        yield events
        nursery.cancel_scope.cancel()


class Publisher:
    """Publishes numbered messages through the API: on each topic an UPDATE of entity ``e<n % 5>``
    (so state changes and repeats), every third one an ALERT instead."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api, self.n = api, 0
        self.alerts: list[tuple[str, int]] = []

    async def publish(self, count: int, topics: tuple[str, ...] = ("news", "traffic")) -> None:
        for _ in range(count):
            self.n += 1
            topic = topics[self.n % len(topics)]
            if self.n % 3 == 0:
                body: dict[str, Any] = {"topic": topic, "type": "ALERT", "data": {"n": self.n}}
                self.alerts.append((topic, self.n))
            else:
                body = {"topic": topic, "type": "UPDATE", "data": [{"id": f"e{self.n % 5}", "n": self.n}]}
                if self.n % 7 == 0:
                    body["removed"] = [f"e{(self.n + 1) % 5}"]
            response = await self.api.post("/api/publish", json=body)
            assert response.status_code == 200, response.text


async def fresh_state(daemon: Daemon, topics: list[str]) -> dict[str, Any]:
    """What a client connecting now gets: state and positions per topic."""
    async with open_client(url(daemon), topics=topics, backoff=FAST) as fresh:
        await until(lambda: all(fresh.position(t) is not None for t in topics))
        return {t: (dict(fresh.state(t)), fresh.position(t)) for t in topics}


def alerts_of(events: list[Event], topic: str) -> list[int]:
    return [e.message["data"]["n"] for e in events if e.kind == "alert" and e.topic == topic]


def published(pub: Publisher, topic: str, since: int = 0) -> list[int]:
    return [n for t, n in pub.alerts[since:] if t == topic]


async def test_a_cut_link_resumes_by_replay_with_every_alert_once(daemon_factory: Any) -> None:
    async with daemon_factory(TOPICS) as daemon, trio.open_nursery() as nursery, api_client(daemon) as api:
        proxy = CuttableProxy(daemon.ws_port)
        await nursery.start(proxy.run)
        pub = Publisher(api)
        await pub.publish(4)
        async with open_client(proxy.url(), topics=["news", "traffic"], backoff=FAST) as client, recording(client) as events:
            await until(lambda: client.position("news") is not None and client.position("traffic") is not None)
            before = len(pub.alerts)  # these are past: in no SNAPSHOT, never shown
            await pub.publish(10)
            await until(lambda: client.position("news").seq + client.position("traffic").seq == pub.n)
            proxy.cut(stay_down=True)  # mid-stream: no close frame, nothing gets through for a while
            await until(lambda: any(e.kind == "disconnected" for e in events))
            await pub.publish(12)  # missed while away
            proxy.restore()
            await pub.publish(12)  # racing the reconnect and its recovery
            fresh = await fresh_state(daemon, ["news", "traffic"])
            await until(lambda: all(client.position(t) == fresh[t][1] for t in fresh))
            for topic, (state, _) in fresh.items():
                assert dict(client.state(topic)) == state, topic
            for topic in fresh:
                assert alerts_of(events, topic) == published(pub, topic, before), f"{topic}: every ALERT once, in order"
            assert proxy.connections == 2
            recovered = [e.message["topics"] for e in events if e.kind == "recovered"]
            assert recovered and sorted(recovered[0]) == ["news", "traffic"], "resumed by replay"
            assert not [e for e in events if e.kind == "alerts_lost"]
            # the resumed connection got one SNAPSHOT, with no section
            answer = [e.message for e in events if e.kind == "snapshot"][-1]
            assert answer["data"] == {} and sorted(answer["recovered"]) == ["news", "traffic"], answer
        nursery.cancel_scope.cancel()  # the proxy


async def test_a_restarted_daemon_is_reported_as_alerts_lost(daemon_factory: Any) -> None:
    raw = {"server": {**TOPICS["server"], "drain_timeout": 0.5}}
    async with daemon_factory(raw) as first:
        port = first.ws_port
        async with api_client(first) as api:
            await Publisher(api).publish(3)
        async with open_client(url(first), topics=["news"], backoff=FAST) as client, recording(client) as events:
            await until(lambda: client.position("news") is not None)
            old = client.position("news")
            first.request_shutdown()
            await until(lambda: any(e.kind == "disconnected" for e in events))
            async with daemon_factory({"server": {**raw["server"], "port": port}}) as second:
                async with api_client(second) as api:
                    await api.post("/api/publish", json={"topic": "news", "data": [{"id": "new"}]})
                await until(lambda: any(e.kind == "alerts_lost" for e in events))
                lost = next(e for e in events if e.kind == "alerts_lost")
                assert lost.message == {"topics": ["news"]}
                assert client.position("news").epoch != old.epoch, "the new run's numbering"
                await until(lambda: "new" in client.state("news"))
                assert dict(client.state("news")) == {"new": {"id": "new"}}, "the dead daemon's state is gone"


async def test_a_gap_on_a_live_link_is_asked_again(daemon_factory: Any) -> None:
    async with daemon_factory(TOPICS) as daemon, trio.open_nursery() as nursery, api_client(daemon) as api:
        proxy = CuttableProxy(daemon.ws_port)
        gone: list[bytes] = []

        def drop(payload: bytes) -> bool:
            # news #5 (an UPDATE) never reaches the client, once: its replay must pass
            hit = not gone and payload.startswith(b'{"type":"UPDATE","topic":"news"') and payload.endswith(b',"seq":5}')
            if hit:
                gone.append(payload)
            return hit

        proxy.drop = drop
        await nursery.start(proxy.run)
        async with open_client(proxy.url(), topics=["news"], backoff=FAST) as client, recording(client) as events:
            await until(lambda: client.position("news") is not None)
            pub = Publisher(api)
            await pub.publish(12, topics=("news",))  # ALERTs at 3, 6, 9, 12
            fresh = await fresh_state(daemon, ["news"])
            await until(lambda: client.position("news") == fresh["news"][1])
            assert gone, "the proxy dropped news #5"
            assert dict(client.state("news")) == fresh["news"][0]
            # #6 (an ALERT) came past the gap: shown at once, and not again when replayed after #5
            assert alerts_of(events, "news") == [3, 6, 9, 12]
            assert any(e.kind == "recovered" and e.message["topics"] == ["news"] for e in events), "answered by replay"
            assert proxy.connections == 1, "asked on the same link, no reconnect"
        nursery.cancel_scope.cancel()  # the proxy


async def test_a_refused_recovery_url_falls_back_to_since_in_a_subscribe(daemon_factory: Any) -> None:
    async with daemon_factory(TOPICS) as daemon, trio.open_nursery() as nursery, api_client(daemon) as api:
        proxy = CuttableProxy(daemon.ws_port)
        await nursery.start(proxy.run)
        async with open_client(proxy.url(), topics=["news", "traffic"], backoff=FAST) as client, recording(client) as events:
            await until(lambda: client.position("news") is not None and client.position("traffic") is not None)
            pub = Publisher(api)
            await pub.publish(6)
            await until(lambda: client.position("news").seq + client.position("traffic").seq == pub.n)
            # a server (or something on the way) that answers topics=/since= with HTTP 400
            proxy.refuse = lambda head: b"since=" in head.split(b"\r\n", 1)[0]
            proxy.cut(stay_down=True)
            await until(lambda: any(e.kind == "disconnected" for e in events))
            await pub.publish(9)
            proxy.restore()
            fresh = await fresh_state(daemon, ["news", "traffic"])
            await until(lambda: all(client.position(t) == fresh[t][1] for t in fresh))
            assert proxy.refused == 1, "one refusal, then a plain handshake"
            for topic, (state, _) in fresh.items():
                assert dict(client.state(topic)) == state, topic
                assert alerts_of(events, topic) == published(pub, topic), f"{topic}: every ALERT once, in order"
            assert any(e.kind == "recovered" and sorted(e.message["topics"]) == ["news", "traffic"] for e in events)
            assert client.status == "open" and client.subscriptions == ["news", "traffic"]
        nursery.cancel_scope.cancel()  # the proxy


async def test_positions_too_long_for_the_url_are_asked_in_a_subscribe(daemon_factory: Any) -> None:
    names = [f"a-topic-with-a-rather-long-name-number-{i:02}" for i in range(60)]
    async with daemon_factory({"server": {"topics": names}}) as daemon, trio.open_nursery() as nursery, api_client(daemon) as api:
        proxy = CuttableProxy(daemon.ws_port)
        heads: list[bytes] = []

        def look(head: bytes) -> bool:  # let every handshake through, keep its request line
            heads.append(head.split(b"\r\n", 1)[0])
            return False

        proxy.refuse = look
        await nursery.start(proxy.run)
        async with open_client(proxy.url(), topics=names, backoff=FAST) as client, recording(client) as events:
            await until(lambda: all(client.position(t) is not None for t in names))
            pub = Publisher(api)
            proxy.cut(stay_down=True)
            await until(lambda: any(e.kind == "disconnected" for e in events))
            await pub.publish(90, topics=tuple(names))  # 1-2 messages per topic, every third an ALERT
            proxy.restore()
            fresh = await fresh_state(daemon, names)
            await until(lambda: all(client.position(t) == fresh[t][1] for t in names))
            assert len(heads) == 2 and len(heads[1]) < 300, "the reconnect's URL carries one position"
            for topic, (state, _) in fresh.items():
                assert dict(client.state(topic)) == state, topic
            got = sorted((e.topic, e.message["data"]["n"]) for e in events if e.kind == "alert")
            assert got == sorted(pub.alerts), "every ALERT once"
            recovered = {t for e in events if e.kind == "recovered" for t in e.message["topics"]}
            assert recovered == set(names) and not [e for e in events if e.kind == "alerts_lost"]
        nursery.cancel_scope.cancel()  # the proxy
