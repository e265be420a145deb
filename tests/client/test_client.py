"""uipd.client against an in-process daemon over real sockets: state, subscriptions, alerts,
reconnect after a restart on the same port, refusals, and dead-link detection."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from tests.conftest import api_client
from uipd.client import Backoff, Event, Refused, TopicState, open_client, reconnect_backoff, should_retry
from uipd.runtime.daemon import Daemon

FAST = reconnect_backoff(0.05, 0.2)


def url(daemon: Daemon, path: str = "/") -> str:
    return f"ws://127.0.0.1:{daemon.ws_port}{path}"


async def publish(daemon: Daemon, body: dict[str, Any]) -> None:
    async with api_client(daemon) as api:
        response = await api.post("/api/publish", json=body)
        assert response.status_code == 200, response.text


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)


async def next_event(client: Any, kind: str, timeout: float = 5.0) -> Event:
    with trio.fail_after(timeout):
        async for event in client.events():
            if event.kind == kind:
                return event
    raise AssertionError(f"events ended before a {kind} event")


def test_state_and_policy_units() -> None:
    state = TopicState()
    state.apply_snapshot({"a": [{"id": 1}, {"id": "2"}], "b": [{"id": "x"}]})
    state.apply_update("a", [{"id": "2", "v": 1}, {"id": "3"}], removed=["1"])
    assert dict(state.get("a")) == {"2": {"id": "2", "v": 1}, "3": {"id": "3"}}
    state.apply_snapshot({"a": []})
    assert state.get("a") == {} and list(state.get("b")) == ["x"]
    assert not should_retry(http_status=401) and not should_retry(http_status=404) and should_retry(http_status=503)
    assert not should_retry(code=4001) and not should_retry(code=1008, reason="bad token")
    assert should_retry(code=1001) and should_retry(code=4008) and should_retry(code=1008, reason="rate limit exceeded")
    b = Backoff(0.1, 1.0, jitter=lambda: 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    low = Backoff(0.1, 1.0, jitter=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(3)] == [0.05, 0.05, 0.05], "never below first / 2"
    default = reconnect_backoff()
    assert (default.first, default.maximum, default.jitter is not None) == (0.5, 30.0, True)
    assert all(0.25 <= default.next() <= 30.0 for _ in range(20))


async def test_state_updates_alerts_and_subscriptions(daemon_factory: Any) -> None:
    async with daemon_factory({"server": {"topics": ["news", "traffic"]}}) as daemon:
        await publish(daemon, {"topic": "news", "type": "UPDATE", "data": [{"id": "n1"}, {"id": "n2"}]})
        async with open_client(url(daemon), backoff=FAST) as client:
            await next_event(client, "snapshot")
            assert client.status == "open" and client.topics == ["news", "traffic"]
            assert set(client.state("news")) == {"n1", "n2"}

            await publish(daemon, {"topic": "news", "type": "UPDATE", "data": [{"id": "n2", "t": "new"}], "removed": ["n1"]})
            event = await next_event(client, "update")
            assert event.topic == "news" and event.message["removed"] == ["n1"]
            assert dict(client.state("news")) == {"n2": {"id": "n2", "t": "new"}}

            await publish(daemon, {"topic": "news", "type": "ALERT", "data": {"message": "flood"}})
            alert = await next_event(client, "alert")
            assert alert.message["data"] == {"message": "flood"}
            assert dict(client.state("news")) == {"n2": {"id": "n2", "t": "new"}}, "an ALERT changes no state"

            await client.subscribe(["traffic"])
            assert (await next_event(client, "subscribed")).message["topics"] == ["traffic"]
            assert client.state_topics() == ["traffic"], "state of topics outside the set is dropped"
            await publish(daemon, {"topic": "news", "type": "UPDATE", "data": [{"id": "n9"}]})
            await publish(daemon, {"topic": "traffic", "type": "UPDATE", "data": [{"id": "t1"}]})
            event = await next_event(client, "update")
            assert event.topic == "traffic", "no news UPDATE after subscribing to traffic only"

            await client.unsubscribe(["traffic"])
            assert client.state("traffic") == {}
            assert (await next_event(client, "subscribed")).message["topics"] == []


async def test_reconnects_to_a_restarted_daemon_with_state_and_subscriptions(daemon_factory: Any) -> None:
    raw = {"server": {"topics": ["news", "traffic"], "drain_timeout": 0.5}}
    async with daemon_factory(raw) as first:
        port = first.ws_port
        await publish(first, {"topic": "traffic", "type": "UPDATE", "data": [{"id": "old"}]})
        async with open_client(url(first), topics=["traffic"], backoff=FAST) as client:
            await until(lambda: "old" in client.state("traffic"))
            first_id = client.client_id
            async with trio.open_nursery() as nursery:
                lost: list[Event] = []

                async def collect() -> None:
                    async for event in client.events():
                        if event.kind == "disconnected":
                            lost.append(event)

                nursery.start_soon(collect)
                first.request_shutdown()  # drain: the client gets close 1001
                await until(lambda: bool(lost))
                assert lost[0].message["code"] == 1001
                await until(lambda: len(lost) >= 2)  # retries, refused while nothing listens
                # (the first daemon's context is still open but stopped: it only finishes exiting)
                async with daemon_factory({**raw, "server": {**raw["server"], "port": port}}) as second:
                    await publish(second, {"topic": "traffic", "type": "UPDATE", "data": [{"id": "new"}]})
                    await publish(second, {"topic": "news", "type": "UPDATE", "data": [{"id": "n"}]})
                    await until(lambda: client.status == "open" and client.subscriptions == ["traffic"])
                    await until(lambda: "new" in client.state("traffic"))
                    assert client.client_id != first_id
                    assert "old" not in client.state("traffic"), "state of the dead daemon replaced"
                    assert client.state_topics() == ["traffic"], "subscriptions restored, news not held"
                    nursery.cancel_scope.cancel()


async def test_a_refused_handshake_raises_and_is_not_retried(daemon_factory: Any) -> None:
    async with daemon_factory() as daemon:
        attempts = 0
        with pytest.raises(Refused) as info, trio.fail_after(5):
            async with open_client(url(daemon, "/nope"), backoff=FAST) as client:
                async for event in client.events():
                    attempts += event.kind == "disconnected"
        assert info.value.http_status == 404
        assert attempts == 0


async def test_a_silent_peer_is_dropped_after_two_heartbeats_and_retried() -> None:
    """A server that completes the handshake, says hello with a 150 ms heartbeat, then goes silent."""
    connections = 0
    pings: list[Any] = []

    async def silent(request: WebSocketRequest) -> None:
        nonlocal connections
        connections += 1
        ws = await request.accept()
        hello = {"type": "connection", "message": "x", "timestamp": "", "heartbeatInterval": 150, "clientId": "c", "topics": ["news"]}
        await ws.send_message(json.dumps(hello))
        try:
            while True:
                pings.append(json.loads(await ws.get_message()))  # never answered
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, silent, "127.0.0.1", 0, None)
        port = server.port
        async with open_client(f"ws://127.0.0.1:{port}/", backoff=FAST) as client:
            await next_event(client, "connected")
            opened = trio.current_time()
            event = await next_event(client, "disconnected")
            elapsed = trio.current_time() - opened
            assert event.message["reason"] == "heartbeat timeout"
            assert 0.28 <= elapsed < 0.8, elapsed
            assert pings and all(p == {"action": "ping"} for p in pings), "probed with ping actions first"
            await until(lambda: connections >= 2)
        nursery.cancel_scope.cancel()


async def test_sim_city_state(daemon_factory: Any) -> None:
    """A realistic run: the simulated city's 700 cameras arrive in one large SNAPSHOT."""
    raw = {"server": {"topics": []}, "sources": {"city": {"plugin": "sim", "speed": 20.0}}}
    async with daemon_factory(raw) as daemon:
        async with open_client(url(daemon), topics=["cameras", "accidents"]) as client:
            await until(lambda: len(client.state("cameras")) == 700, timeout=10)
            assert all("lat" in c["location"] for c in client.state("cameras").values())
            await next_event(client, "update", timeout=10)
            assert sorted(client.state_topics()) == ["accidents", "cameras"]
