"""Hostile clients against recovery (PROTOCOL.md section 8), over real sockets: malformed, huge and
odd ``since`` on the handshake and on subscribe, recovery floods against the snapshot budget,
many clients recovering at once, and positions after a slow-consumer resync."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import trio

from tests.conftest import DEFAULT_TOPICS, connect, running_daemon
from tests.server.test_recovery import Tracker, epoch, open_with, pub, server_state, url
from tests.wsclient import RawClient, Rejected
from uipd.core import publish


async def status(port: int, path: str) -> int:
    with pytest.raises(Rejected) as info:
        await RawClient.connect(port, path)
    return info.value.status


def raw_since(text: str, topics: str = "weather") -> str:
    return f"/?topics={topics}&since=" + quote(text)


async def test_hostile_handshake_since_is_refused_400_and_the_daemon_carries_on(daemon):
    e = epoch(daemon, "weather")
    bad = [
        "[" * 100_00 + "]" * 100_00,  # deep nesting (the URL bound cuts it first or orjson's depth)
        '{"weather":' * 500 + "{}" + "}" * 500,
        '{"weather": {"seq": -1, "epoch": "%s"}}' % e,
        '{"weather": {"seq": 1.0, "epoch": "%s"}}' % e,
        '{"weather": {"seq": 1e3, "epoch": "%s"}}' % e,
        '{"weather": {"seq": true, "epoch": "%s"}}' % e,
        '{"weather": {"seq": 18446744073709551616, "epoch": "%s"}}' % e,  # past 64 bits
        '{"weather": {"seq": 9007199254740993, "epoch": "%s"}}' % e,  # past 2^53: no JS client can hold it
        '{"weather": {"seq": 1, "epoch": 12345678}}',
        '{"weather": {"seq": 1, "epoch": null}}',
        '{"weather": {"seq": 1}}',
        '{"weather": [1, "x"]}',
        '["weather"]',
        "null",
        '"x"',
        "",
        '{"weather": {"seq": 1, "epoch": "%s"}} trailing' % e,
    ]
    for text in bad:
        assert await status(daemon.ws_port, raw_since(text)) in (400, 431), text[:80]
    # two since parameters, a since naming an unknown topic, an unknown or empty-named topic
    assert await status(daemon.ws_port, raw_since("{}") + "&since=%7B%7D") == 400
    assert await status(daemon.ws_port, raw_since('{"nope": {"seq": 1, "epoch": "x"}}')) == 400
    assert await status(daemon.ws_port, "/?topics=weather,nope") == 400
    # a 16 KiB URL: refused before anything is parsed (the request bound), never a crash
    huge = "{" + ",".join(f'"t{i}": {{"seq": 1, "epoch": "xxxxxxxx"}}' for i in range(600)) + "}"
    assert len(quote(huge)) > 16 * 1024
    assert await status(daemon.ws_port, raw_since(huge)) in (400, 431)
    # still serving, and a good since still recovers
    await pub(daemon, "weather", 2)
    c, answer = await open_with(daemon, url(["weather"], {"weather": {"seq": 1, "epoch": e}}))
    assert answer["recovered"] == ["weather"] and [m["seq"] for m in await c.barrier()] == [2]
    await c.aclose()


async def test_odd_but_valid_since(daemon):
    e = epoch(daemon, "weather")
    await pub(daemon, "weather", 3)
    # duplicate keys: the last one wins (JSON parsers agree on nothing else)
    c, answer = await open_with(daemon, raw_since('{"weather": {"seq": 0, "epoch": "zzzzzzzz"}, "weather": {"seq": 2, "epoch": "%s"}}' % e))
    assert answer["recovered"] == ["weather"] and [m["seq"] for m in await c.barrier()] == [3]
    await c.aclose()
    # extra fields in a position are ignored; a position for a topic outside the set is ignored
    c, answer = await open_with(daemon, raw_since('{"weather": {"seq": 3, "epoch": "%s", "x": [1]}, "cameras": {"seq": 0, "epoch": "x"}}' % e))
    assert answer["recovered"] == ["weather"] and "cameras" not in answer["data"] and "cameras" not in answer.get("alertsLost", [])
    await c.aclose()
    # ahead of the topic under the same epoch: a section and alertsLost, never a replay
    c, answer = await open_with(daemon, url(["weather"], {"weather": {"seq": 10**9, "epoch": e}}))
    assert answer.get("recovered", []) == [] and "weather" in answer["data"] and answer["alertsLost"] == ["weather"]
    assert answer["positions"]["weather"] == {"seq": 3, "epoch": e}
    await c.aclose()
    # topics=all with since for every topic; and topics= empty (no topics at all)
    since = {t: {"seq": 0, "epoch": epoch(daemon, t)} for t in DEFAULT_TOPICS}
    c, answer = await open_with(daemon, url(["all"], since))
    assert "weather" in answer["recovered"] and answer["data"] == {}
    assert [m["seq"] for m in await c.barrier()] == [1, 2, 3]
    await c.aclose()
    c, answer = await open_with(daemon, "/?topics=")
    assert answer["data"] == {}
    await pub(daemon, "weather", 1, start=3)
    assert await c.barrier() == []
    await c.aclose()


async def test_since_never_leaks_a_topic_outside_the_token(daemon_factory):
    import jwt

    key = "k" * 32
    async with daemon_factory({"auth": {"mode": "jwt", "jwt_key": key}}) as d:
        token = jwt.encode({"topics": ["weather"]}, key, algorithm="HS256")
        await pub(d, "cameras", 3, alert_every=1)
        await pub(d, "weather", 1)
        since = {t: {"seq": 0, "epoch": epoch(d, t)} for t in ("cameras", "weather")}
        for path in (url(None, since), url(["weather"], since)):
            c, answer = await open_with(d, path + f"&token={token}")
            assert "cameras" not in json.dumps(answer), answer
            got = await c.barrier()
            assert [m.get("topic") for m in got] == ["weather"], got
            await c.send_json({"action": "subscribe", "topics": ["weather"], "since": since})
            got = await c.barrier()
            assert "cameras" not in json.dumps(got), got
            await c.aclose()


async def test_subscribe_with_a_huge_since_is_refused_quickly(daemon):
    # 10k topics do not fit max_message_bytes: 1009, nothing parsed
    big = await connect(daemon, url(["cameras"]))
    await big.send_json({"action": "subscribe", "topics": ["weather"], "since": {f"t{i}": {"seq": 1, "epoch": "xxxxxxxx"} for i in range(10_000)}})
    assert await big.expect_close() == 1009
    c = await connect(daemon, url(["cameras"]))
    since = {f"t{i}": {"seq": 1, "epoch": "xxxxxxxx"} for i in range(1_500)}  # just under 64 KiB
    since["weather"] = {"seq": 0, "epoch": epoch(daemon, "weather")}
    with trio.fail_after(5):
        await c.send_json({"action": "subscribe", "topics": ["weather"], "since": since})
        err = await c.recv_json()
    assert err["type"] == "ERROR" and err["error"]["code"] == "unknown_topic", err
    assert len(json.dumps(err)) < 40_000  # the answer does not echo all 1500 names
    deep = {"action": "subscribe", "topics": ["weather"], "since": json.loads("[" * 200 + "]" * 200)}
    await c.send_json(deep)
    assert (await c.recv_json())["error"]["code"] == "bad_request"
    await c.send_json({"action": "subscribe", "topics": ["weather"], "since": None})
    assert (await c.recv_json())["error"]["code"] == "bad_request"
    await pub(daemon, "weather", 1)
    assert await c.barrier() == []  # none of that subscribed it
    await c.aclose()


async def test_subscribe_with_since_flood_is_charged_to_the_snapshot_budget(daemon_factory):
    """A client re-asking with a wrong epoch gets a full section each time: it must hit the budget."""
    config = {"server": {"snapshot_budget_bytes": 1000, "snapshot_burst_bytes": 20_000, "rate_limit": 0}}
    async with daemon_factory(config) as d:
        await pub(d, "weather", 1)
        await d.publish(publish.update("weather", [{"id": f"w{i}", "v": "x" * 100} for i in range(50)]))
        c = await connect(d, url(["weather"]))
        answers = limited = 0
        for _ in range(20):
            await c.send_json({"action": "subscribe", "topics": ["weather"], "since": {"weather": {"seq": 0, "epoch": "wrongwrong"}}})
            for m in await c.barrier():
                if m["type"] == "SNAPSHOT":
                    answers += 1
                elif m["type"] == "ERROR":
                    assert m["error"]["code"] == "rate_limited"
                    limited += 1
        assert limited > 0 and answers < 20, (answers, limited)
        await c.aclose()


async def test_many_clients_recover_at_once_all_correct(daemon):
    """60 clients at 6 different positions come back together (the answer cache serves them):
    each gets exactly its own gap, then the live messages, no gap and no duplicate."""
    await pub(daemon, "weather", 5, alert_every=2)
    e = epoch(daemon, "weather")
    clients: list[tuple[int, RawClient, dict]] = []

    async def one(i: int) -> None:
        c, answer = await open_with(daemon, url(["weather"], {"weather": {"seq": i % 6, "epoch": e}}))
        clients.append((i % 6, c, answer))

    async with trio.open_nursery() as n:
        for i in range(60):
            n.start_soon(one, i)
    await pub(daemon, "weather", 2, start=5)
    for since, c, answer in clients:
        assert answer["recovered"] == ["weather"] and answer["data"] == {}
        assert [m["seq"] for m in await c.barrier()] == list(range(since + 1, 8)), since
        await c.aclose()
    assert daemon.hub.counters.recoveries["replayed"] >= 60


async def test_positions_after_a_slow_consumer_resync(daemon_factory):
    async with daemon_factory({"server": {"max_queue_bytes": 65536}}) as d:
        stuck = await connect(d, url(["weather"]))
        for i in range(400):
            await pub(d, "weather", 1, start=i)
            await d.publish(publish.update("weather", [{"id": f"big{i % 5}", "v": "x" * 2000}]))
        t = Tracker()
        t.positions["weather"] = {"seq": 0, "epoch": epoch(d, "weather")}
        resynced = False
        with trio.fail_after(20):
            while True:
                m = await stuck.recv_json()
                t.apply(m)
                if m["type"] == "SNAPSHOT" and m.get("resync"):
                    resynced = True
                    assert m["positions"]["weather"]["seq"] <= 800
                if t.positions["weather"]["seq"] == 800:
                    break
        assert resynced and t.gaps == []
        await pub(d, "weather", 1, start=900)
        t.apply(await stuck.recv_json())
        assert t.positions["weather"]["seq"] == 801 and t.gaps == []
        assert t.state["weather"] == server_state(d, "weather")
        await stuck.aclose()


def test_the_queue_holds_until_every_held_answer_is_in() -> None:
    """Two asks held, and one answered at once in between: the hold ends with the last held
    answer, and every frame queued since the first ask comes after all three answers."""
    from uipd.core.outbound import Delivery, OutboundQueue

    q = OutboundQueue(1000)
    q.offer(b"before", Delivery.RELIABLE)
    q.hold()
    q.offer(b"live1", Delivery.DROPPABLE)
    q.hold()
    q.offer(b"live2", Delivery.DROPPABLE)
    assert q.take() == [b"before"] and q.held
    q.written()
    q.release([b"local"], held=False)  # answered at once: behind the hold point, ends no hold
    assert q.held and q.take() == [b"local"]
    q.written()
    q.release([b"A1"])
    assert q.held and q.take() == [b"A1"]
    q.written()
    q.release([b"A2"])
    assert not q.held
    assert q.take() == [b"A2", b"live1", b"live2"]


# -- over Redis: two recoveries held at once ------------------------------------------------------

from tests.cluster.conftest import proxy, prefix  # noqa: E402,F401  (fixtures)
from tests.cluster.test_cluster import redis_up, until  # noqa: E402
from tests.cluster.test_recovery import config as redis_config  # noqa: E402


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
async def test_two_remote_recoveries_in_a_row_keep_live_messages_behind_both_answers(prefix, proxy):
    """A client asks twice (subscribe with since, history in Redis only) while a read is slow: the
    second answer must come before the live messages of its topic queued after it asked, else the
    client sees seq 11 before the replay 4..10 (a gap, then a silent loss of 11)."""
    async with running_daemon(redis_config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        for topic in ("accidents", "weather"):
            for i in range(10):
                await n1.publish(publish.update(topic, [{"id": f"e{i % 3}", "n": i}]))
        async with running_daemon(redis_config(prefix, "n2", proxy.url, command_timeout=2.0, lease_ttl=6.0, publish_timeout=3.0)) as n2:
            await until(lambda: n2.broker.ready)
            c = await connect(n2, "/?topics=accidents")
            proxy.delay = 0.2
            e = {t: n2.hub.topics.topics[t].epoch for t in ("accidents", "weather")}
            await c.send_json({"action": "subscribe", "topics": ["accidents"], "since": {"accidents": {"seq": 3, "epoch": e["accidents"]}}})
            await c.send_json({"action": "subscribe", "topics": ["weather"], "since": {"weather": {"seq": 3, "epoch": e["weather"]}}})
            await until(lambda: any("weather" in s.subscriptions.names for s in n2.hub.sessions.values()), step=0.005)
            await n1.publish(publish.update("weather", [{"id": "e0", "n": 10}]))  # weather 11, live, while the reads are on their way
            weather: list[int] = []
            with trio.fail_after(10):
                while len(weather) < 8:
                    m = await c.recv_json()
                    if m.get("topic") == "weather" and m["type"] == "UPDATE":
                        weather.append(m["seq"])
            assert weather == list(range(4, 12)), weather
            await c.aclose()


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
async def test_subscribe_with_since_needing_remote_history_is_charged_to_the_snapshot_budget(prefix):
    """On a node whose own history does not reach back, every subscribe with since goes to the
    Redis reader; what comes back as a section (too old here) must be charged like any requested
    SNAPSHOT, else a client gets full snapshots past its budget by asking with a since."""
    async with running_daemon(redis_config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        for i in range(20):
            await n1.publish(publish.update("weather", [{"id": f"w{i}", "v": "x" * 200}]))
        n2_config = redis_config(prefix, "n2")
        n2_config["history"] = {"size": 5}
        n2_config["server"].update(snapshot_budget_bytes=1000, snapshot_burst_bytes=10_000, rate_limit=0)
        async with running_daemon(n2_config) as n2:
            await until(lambda: n2.broker.ready)
            c = await connect(n2, "/?topics=weather")
            e = n2.hub.topics.topics["weather"].epoch
            sections = limited = 0
            for _ in range(20):
                await c.send_json({"action": "subscribe", "topics": ["weather"], "since": {"weather": {"seq": 0, "epoch": e}}})
                for m in await c.barrier():
                    if m["type"] == "SNAPSHOT" and "weather" in m["data"]:
                        assert m["alertsLost"] == ["weather"]
                        sections += 1
                    elif m["type"] == "ERROR":
                        assert m["error"]["code"] == "rate_limited"
                        limited += 1
            assert limited > 0 and sections * 4500 <= 10_000 + 20_000, (sections, limited)
            await c.aclose()


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
async def test_clients_that_leave_while_their_history_is_read_cost_nothing_after(prefix, proxy):
    async with running_daemon(redis_config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        for i in range(10):
            await n1.publish(publish.update("accidents", [{"id": f"e{i % 3}", "n": i}]))
        e = n1.hub.topics.topics["accidents"].epoch
        async with running_daemon(redis_config(prefix, "n2", proxy.url, command_timeout=2.0, lease_ttl=6.0, publish_timeout=3.0)) as n2:
            await until(lambda: n2.broker.ready)
            proxy.delay = 0.1
            since = "/?topics=accidents&since=" + quote(json.dumps({"accidents": {"seq": 2, "epoch": e}}))
            for _ in range(20):  # connect with since and vanish before the answer
                c = await RawClient.connect(n2.ws_port, since)
                await c.aclose()
            await until(lambda: not n2.hub.sessions and n2.broker.history.queued == 0)
            proxy.delay = 0.0
            c, answer = await open_with(n2, since)  # and the next one is served as usual
            assert answer["recovered"] == ["accidents"]
            assert [m["seq"] for m in await c.barrier()] == list(range(3, 11))
            await c.aclose()
