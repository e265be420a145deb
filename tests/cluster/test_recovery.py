"""Recovery over Redis (PROTOCOL.md section 8, issue 14 item 4), with the real Redis: a client
recovers on any node of the cluster, byte for byte as a client that stayed connected, including a
node started after it left (history read from the topic's stream in Redis); publishes racing a
read of history over a slow network; a Redis that lost the topic's data (a new epoch: snapshot
sections and ``alertsLost``, never a wrong replay); a seq that went back (the epoch rotated); a
node cut off and back (its clients get the missed messages, ALERTs included, without a resync);
a reader whose Redis stopped answering (answered within ``command_timeout`` with ``alertsLost``).

Each test has its own key prefix and deletes its keys."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import coredis
import httpx
import pytest
import trio

from tests.cluster.conftest import drop_keys
from tests.cluster.test_cluster import REDIS, redis_up, until
from tests.conftest import api_client, running_daemon
from tests.wsclient import RawClient
from uipd.core.hub import Hub
from uipd.runtime.daemon import Daemon

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")

FAST = {"command_timeout": 0.3, "ping_interval": 0.3, "publish_timeout": 1.0}


def config(prefix: str, node: str, url: str = REDIS, **broker: Any) -> dict[str, Any]:
    return {"broker": {"kind": "redis", "url": url, "prefix": prefix, "node_id": node, **FAST, **broker}, "server": {"topics": ["accidents", "weather"]}}


def body(i: int) -> dict[str, Any]:
    """Message i of a test's run: every third an ALERT."""
    if i % 3 == 2:
        return {"topic": "accidents", "type": "ALERT", "data": {"message": f"alert {i}"}}
    return {"topic": "accidents", "data": [{"id": f"e{i % 4}", "n": i}]}


async def publish(node: Daemon, seqs: range) -> None:
    async with api_client(node) as http:
        for i in seqs:
            r = await http.post("/api/publish", json=body(i))
            assert r.status_code == 200 and r.json()["seq"] == i, r.text


def since_url(seq: int, epoch: str) -> str:
    return "/?topics=accidents&since=" + quote(json.dumps({"accidents": {"seq": seq, "epoch": epoch}}))


async def watcher(node: Daemon) -> tuple[RawClient, dict[str, Any]]:
    """A client of ``accidents`` that stays connected (what a recovering client must match)."""
    c = await RawClient.connect(node.ws_port, "/?topics=accidents")
    await c.recv_json()
    return c, await c.recv_json()


async def texts(c: RawClient, n: int) -> list[str]:
    return [await c.recv() for _ in range(n)]


async def recover(node: Daemon, seq: int, epoch: str) -> tuple[RawClient, dict[str, Any]]:
    """Reconnect with ``since``: the client and the recovery answer's SNAPSHOT."""
    c = await RawClient.connect(node.ws_port, since_url(seq, epoch))
    assert (await c.recv_json())["type"] == "connection"
    answer = await c.recv_json()
    assert answer["type"] == "SNAPSHOT"
    return c, answer


def epoch_of(node: Daemon) -> str:
    return node.hub.topics.topics["accidents"].epoch


async def published(node: Daemon, n: int) -> tuple[RawClient, list[str], str]:
    """Messages 1..n published on ``node``: a client that stayed connected, what it got, the epoch."""
    await until(lambda: node.broker.ready)
    stayed, _ = await watcher(node)
    await publish(node, range(1, n + 1))
    return stayed, await texts(stayed, n), epoch_of(node)


async def test_a_client_recovers_on_another_node_byte_for_byte(prefix):
    async with running_daemon(config(prefix, "n1")) as n1, running_daemon(config(prefix, "n2")) as n2:
        await until(lambda: n1.broker.ready and n2.broker.ready)
        assert epoch_of(n1) == epoch_of(n2)  # the cluster's, from Redis
        stayed, _ = await watcher(n1)
        await publish(n1, range(1, 4))
        await texts(stayed, 3)
        await publish(n1, range(4, 11))  # the client is away: 4-10 (ALERTs 5 and 8)
        want = await texts(stayed, 7)
        c, answer = await recover(n2, 3, epoch_of(n1))
        assert answer["recovered"] == ["accidents"] and answer["data"] == {} and answer["alertsLost"] == []
        assert await texts(c, 7) == want  # the very bytes the client that stayed got, from the other node


async def test_a_node_started_after_the_client_left_replays_from_redis_then_from_its_own_history(prefix):
    async with running_daemon(config(prefix, "n1")) as n1:
        stayed, want, epoch = await published(n1, 10)
        async with running_daemon(config(prefix, "n2")) as n2:
            await until(lambda: n2.broker.ready)
            assert n2.hub.topics.topics["accidents"].history.messages == 0  # nothing of it here
            c, answer = await recover(n2, 3, epoch)
            assert answer["recovered"] == ["accidents"] and answer["alertsLost"] == []
            assert await texts(c, 7) == want[3:]
            assert n2.broker.history.reads == 1
            # what was read is kept: the next client of the topic is served here, by the same bytes
            d, answer = await recover(n2, 4, epoch)
            assert answer["recovered"] == ["accidents"] and await texts(d, 6) == want[4:]
            assert n2.broker.history.reads == 1
            async with httpx.AsyncClient() as http:
                stats = (await http.get(f"http://127.0.0.1:{n2.api_port}/api/stats")).json()
            assert stats["cluster"]["history"]["reads"] == 1


async def test_publishes_racing_a_history_read_over_a_slow_network_meet_it_with_no_gap_and_no_duplicate(prefix, proxy, monkeypatch):
    seen: dict[str, int] = {}
    complete = Hub.complete_recovery

    def completing(self, pending, fetched, now):
        seen["asked at"], seen["answered at"] = pending.upto_by_topic["accidents"], self.topics.topics["accidents"].seq
        complete(self, pending, fetched, now)

    monkeypatch.setattr(Hub, "complete_recovery", completing)
    async with running_daemon(config(prefix, "n1")) as n1:
        stayed, _, epoch = await published(n1, 20)
        async with running_daemon(config(prefix, "n2", proxy.url, command_timeout=1.5, lease_ttl=6.0, publish_timeout=3.0)) as n2:
            await until(lambda: n2.broker.ready)
            proxy.delay = 0.1  # every read of n2's takes 0.2 s at least: publishes land meanwhile
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, n1, range(21, 41))
                c, answer = await recover(n2, 5, epoch)
            assert answer["recovered"] == ["accidents"]
            got = await texts(c, 35)
            assert [json.loads(t)["seq"] for t in got] == list(range(6, 41))  # replay, then live, exactly once each
            assert n2.broker.history.reads == 1
            assert seen["answered at"] > seen["asked at"]  # live messages came while the history was read
            assert got[15:] == await texts(stayed, 20)


async def test_a_redis_that_lost_the_topics_data_means_a_new_epoch_sections_and_alerts_lost(prefix):
    async with running_daemon(config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        stayed, _ = await watcher(n1)
        await publish(n1, range(1, 6))
        await texts(stayed, 5)
        old = epoch_of(n1)
        await drop_keys(prefix)  # Redis emptied under the running node
        async with api_client(n1) as http:
            assert (await http.post("/api/publish", json=body(0))).json()["seq"] == 1
        resync = await stayed.recv_until(lambda m: m["type"] == "SNAPSHOT")
        new = epoch_of(n1)
        assert new != old and resync["resync"] is True and resync["positions"]["accidents"] == {"seq": 1, "epoch": new}
        async with coredis.Redis.from_url(REDIS) as redis:
            assert (await redis.hget(f"{prefix}:epoch", "accidents")).decode() == new
        c, answer = await recover(n1, 5, old)  # a position of the lost run: never replayed
        assert answer["recovered"] == [] and answer["alertsLost"] == ["accidents"]
        assert answer["positions"]["accidents"] == {"seq": 1, "epoch": new} and [e["id"] for e in answer["data"]["accidents"]] == ["e0"]


async def test_a_seq_that_went_back_under_the_same_epoch_rotates_the_epoch(prefix, proxy):
    async with running_daemon(config(prefix, "n1", proxy.url)) as n1, running_daemon(config(prefix, "n2")) as n2:
        await until(lambda: n1.broker.ready and n2.broker.ready)
        stayed, _ = await watcher(n1)
        await publish(n2, range(1, 6))
        await texts(stayed, 5)
        old = epoch_of(n1)
        proxy.freeze()
        await until(lambda: not n1.broker.ready, timeout=3)
        async with coredis.Redis.from_url(REDIS) as redis:  # a failover to a replica that had only seq 1-3
            await redis.hset(f"{prefix}:seq", {"accidents": 3})
            await redis.xdel(f"{prefix}:history:accidents", ["4-0", "5-0"])
        proxy.thaw()
        resync = await stayed.recv_until(lambda m: m["type"] == "SNAPSHOT", timeout=6)
        new = epoch_of(n1)
        assert new != old and resync["resync"] is True and resync["positions"]["accidents"] == {"seq": 3, "epoch": new}
        async with coredis.Redis.from_url(REDIS) as redis:
            assert (await redis.hget(f"{prefix}:epoch", "accidents")).decode() == new
            assert await redis.xlen(f"{prefix}:history:accidents") == 0  # the old run's history is gone
        # n2 learns the new epoch from the next message and moves on with it
        await publish(n1, range(4, 5))
        assert json.loads(await stayed.recv())["seq"] == 4
        await until(lambda: epoch_of(n2) == new)
        for node in (n1, n2):  # a client of the old run: a snapshot and alertsLost, never seq 4-5 of another run
            c, answer = await recover(node, 5, old)
            assert answer["recovered"] == [] and answer["alertsLost"] == ["accidents"] and answer["positions"]["accidents"]["epoch"] == new


async def test_a_node_cut_off_and_back_gives_its_clients_the_missed_messages_without_a_resync(prefix, proxy):
    async with running_daemon(config(prefix, "n1", proxy.url)) as n1, running_daemon(config(prefix, "n2")) as n2:
        await until(lambda: n1.broker.ready and n2.broker.ready)
        cut, _ = await watcher(n1)
        stayed, _ = await watcher(n2)
        await publish(n2, range(1, 3))
        await texts(cut, 2)
        await texts(stayed, 2)
        proxy.freeze()
        await until(lambda: not n1.broker.ready, timeout=3)
        await publish(n2, range(3, 10))  # ALERTs 5 and 8
        proxy.thaw()
        await until(lambda: n1.broker.ready, timeout=6)
        await publish(n2, range(10, 11))
        assert await texts(cut, 8) == await texts(stayed, 8)  # 3-10: the missed ones, then live; no SNAPSHOT
        assert n1.broker.caught_up == 7 and not n1.broker.lost_alerts and not n1.broker.missed
        assert n1.hub.counters.resyncs == 0
        async with api_client(n1) as http:
            metrics = (await http.get("/metrics")).text
        assert "uipd_cluster_caught_up_messages_total 7.0" in metrics


async def test_a_reader_whose_redis_stopped_answering_answers_within_command_timeout_with_alerts_lost(prefix, proxy):
    async with running_daemon(config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        await publish(n1, range(1, 6))
        epoch = epoch_of(n1)
        async with running_daemon(config(prefix, "n2", proxy.url, ping_interval=5.0)) as n2:
            await until(lambda: n2.broker.ready)
            proxy.freeze()
            started = trio.current_time()
            c, answer = await recover(n2, 2, epoch)
            assert trio.current_time() - started < FAST["command_timeout"] + 0.25
            assert answer["recovered"] == [] and answer["alertsLost"] == ["accidents"]
            assert answer["positions"]["accidents"] == {"seq": 5, "epoch": epoch} and len(answer["data"]["accidents"]) == 3
            assert n2.broker.history.unread == 1


async def test_a_stream_ahead_of_the_seq_starts_a_new_epoch_at_the_next_publish_and_every_node_follows(prefix):
    async with running_daemon(config(prefix, "n1")) as n1, running_daemon(config(prefix, "n2")) as n2:
        await until(lambda: n1.broker.ready and n2.broker.ready)
        stayed, _ = await watcher(n2)
        await publish(n1, range(1, 4))
        await texts(stayed, 3)
        old = epoch_of(n2)
        async with coredis.Redis.from_url(REDIS) as redis:  # the seq went back, its history did not
            await redis.hset(f"{prefix}:seq", {"accidents": 1})
        async with api_client(n1) as http:
            assert (await http.post("/api/publish", json=body(0))).json()["seq"] == 2
        resync = await stayed.recv_until(lambda m: m["type"] == "SNAPSHOT")
        assert resync["resync"] is True and resync["positions"]["accidents"]["seq"] == 2
        new = resync["positions"]["accidents"]["epoch"]
        assert new != old and epoch_of(n1) == epoch_of(n2) == new
        async with coredis.Redis.from_url(REDIS) as redis:
            assert await redis.xrange(f"{prefix}:history:accidents") and (await redis.xrange(f"{prefix}:history:accidents"))[0].identifier == b"2-0"
        c, answer = await recover(n2, 1, new)  # the new run's history serves it
        assert answer["recovered"] == ["accidents"] and json.loads(await c.recv())["seq"] == 2


async def test_a_reconnect_storm_on_a_fresh_node_reads_each_message_from_redis_about_once(prefix, proxy):
    async with running_daemon(config(prefix, "n1")) as n1:
        _, want, epoch = await published(n1, 30)
        async with running_daemon(config(prefix, "n2", proxy.url, command_timeout=1.0, lease_ttl=6.0, publish_timeout=3.0)) as n2:
            await until(lambda: n2.broker.ready)
            proxy.delay = 0.05  # the clients' requests pile up while a read is on its way
            results: dict[int, list[str]] = {}

            async def client(i: int) -> None:
                c, answer = await recover(n2, i, epoch)
                assert answer["recovered"] == ["accidents"], answer
                results[i] = await texts(c, 30 - i)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(client, i % 25)
            assert all(results[i] == want[i:] for i in results) and len(results) == 25
            assert n2.broker.history.reads <= 3 and n2.broker.history.unread == 0


async def test_recoveries_past_the_history_queue_are_answered_at_once_with_alerts_lost(prefix, proxy):
    async with running_daemon(config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        await publish(n1, range(1, 6))
        epoch = epoch_of(n1)
        slow = config(prefix, "n2", proxy.url, command_timeout=1.0, lease_ttl=6.0, publish_timeout=3.0, history_queue=1)
        async with running_daemon(slow) as n2:
            await until(lambda: n2.broker.ready)
            proxy.delay = 0.2  # a read takes 0.4 s: the requests made meanwhile find the queue full
            answers: list[tuple[float, dict[str, Any]]] = []

            async def client() -> None:
                started = trio.current_time()
                _, answer = await recover(n2, 1, epoch)
                answers.append((trio.current_time() - started, answer))

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(client)
            refused = [(t, a) for t, a in answers if a["alertsLost"] == ["accidents"]]
            assert refused and n2.broker.history.unread == len(refused)
            assert all(t < 0.35 for t, _ in refused)  # not held for the read (0.4 s at least)
            assert all(a["recovered"] == ["accidents"] for t, a in answers if (t, a) not in refused)


async def test_a_recovery_answer_that_fails_closes_that_client_only_and_the_reader_goes_on(prefix, monkeypatch):
    """The reader's fault boundary: one client's answer raising closes it 1011; the next client
    recovered through the same reader, on the same session with Redis, gets its replay."""
    async with running_daemon(config(prefix, "n1")) as n1:
        await until(lambda: n1.broker.ready)
        await publish(n1, range(1, 6))
        epoch = epoch_of(n1)
        async with running_daemon(config(prefix, "n2")) as n2:  # started later: its recoveries read Redis
            await until(lambda: n2.broker.ready)
            real = Hub.complete_recovery
            calls = []

            def failing_once(hub, pending, fetched, now):
                calls.append(pending.session.id)
                if len(calls) == 1:
                    raise RuntimeError("injected: the answer cannot be built")
                return real(hub, pending, fetched, now)

            monkeypatch.setattr(Hub, "complete_recovery", failing_once)
            sessions = n2.broker._sessions
            victim = await RawClient.connect(n2.ws_port, since_url(1, epoch))
            assert (await victim.recv_json())["type"] == "connection"
            assert await victim.expect_close() == 1011
            canary, answer = await recover(n2, 1, epoch)
            assert answer["recovered"] == ["accidents"] and len(calls) >= 1  # (served from the history the first read backfilled)
            replayed = [await canary.recv_json() for _ in range(4)]
            assert [m["seq"] for m in replayed] == [2, 3, 4, 5]
            assert n2.broker.ready and n2.broker._sessions == sessions  # the session with Redis went on
            await canary.aclose()
