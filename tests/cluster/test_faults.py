"""The Redis broker when Redis misbehaves (issue 12 items 5 and 6): every wait on Redis is
bounded, a leader whose Redis stopped answering stops its source before its lease can expire,
readiness follows Redis, no ALERT is lost silently, and the HTTP API tells the truth about each
message (200 published, 503 not published, 504 unknown).

A blackholed Redis is a FreezableProxy in front of the shared Redis, frozen; each test has its
own key prefix and deletes its keys."""

import json
import logging
from urllib.parse import quote

import coredis
import pytest
import trio

from tests.cluster.test_cluster import REDIS, redis_up, until
from tests.conftest import api_client, connect, running_daemon
from tests.wsclient import RawClient
from tests.sources.test_supervision import inline_plugin
from uipd.cluster.redis import RedisBroker

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")

TTL = 1.5
FAST = {"command_timeout": 0.2, "ping_interval": 0.2, "publish_timeout": 1.0}
"""Short bounds, so each fault shows within a fraction of a second."""


def config(prefix, node, url=REDIS, **extra):
    return {
        "broker": {"kind": "redis", "url": url, "prefix": prefix, "node_id": node, "lease_ttl": TTL, **FAST},
        "server": {"topics": ["accidents", "weather"]},
        **extra,
    }


def probe_plugin(active, node):
    """A source type "probe" that only records whether it runs on ``node`` (``active[node]``)."""

    class Probe:
        topics = ("probe",)

        async def run(self, publisher):
            active[node] = True
            try:
                await trio.sleep_forever()
            finally:
                active[node] = False

    return inline_plugin("probe", Probe)


def broker_lines(caplog, text):
    return [r for r in caplog.records if r.name == "uipd.cluster.redis" and text in r.getMessage()]


async def test_a_blackholed_redis_stops_the_source_before_its_lease_expires_and_readiness_follows(prefix, proxy, caplog):
    caplog.set_level(logging.INFO)
    active = {}
    probe = {"sources": {"probe": {"plugin": "probe"}}}
    async with running_daemon(config(prefix, "a", proxy.url, **probe), plugins=(probe_plugin(active, "a"),)) as a:
        await until(lambda: active.get("a"))
        async with running_daemon(config(prefix, "b", **probe), plugins=(probe_plugin(active, "b"),)) as b, api_client(a) as http:
            await until(lambda: b.broker.ready)
            assert not active.get("b") and (await http.get("/readyz")).status_code == 200
            proxy.freeze()
            frozen_at = trio.current_time()
            stopped_at = started_at = unready_at = None
            with trio.fail_after(4 * TTL):
                while started_at is None or unready_at is None:
                    assert not (active.get("a") and active.get("b")), "two nodes run the same source"
                    now = trio.current_time()
                    if stopped_at is None and not active.get("a"):
                        stopped_at = now
                    if started_at is None and active.get("b"):
                        started_at = now
                    if unready_at is None and (await http.get("/readyz")).status_code == 503:
                        unready_at = now
                    await trio.sleep(0.01)
            # the lease was last renewed before the freeze: the source stopped within ttl - margin of it
            assert stopped_at - frozen_at < TTL * 0.75 + 0.1
            assert started_at > stopped_at
            assert unready_at - frozen_at < FAST["ping_interval"] + FAST["command_timeout"] + 0.3
            assert not a.broker.ready
            proxy.thaw()
            with trio.fail_after(6):
                while (await http.get("/readyz")).status_code != 200:
                    await trio.sleep(0.05)
            assert a.broker.ready and active.get("b") and not active.get("a")  # b keeps the source
    # one line per change of state, however many reconnection attempts failed
    assert len(broker_lines(caplog, "Redis unreachable (Redis did not answer")) == 1
    assert len(broker_lines(caplog, "connected to redis://127.0.0.1:%d" % proxy.port)) == 2


async def test_a_publish_sent_without_an_answer_is_reported_unknown_not_failed(prefix, proxy, caplog):
    async with running_daemon(config(prefix, "a", proxy.url)) as a, api_client(a) as http:
        await until(lambda: a.broker.ready)
        proxy.freeze("down")  # Redis runs the commands; the answers never come back
        with trio.fail_after(3):
            r = await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"m": "crash"}})
        assert r.status_code == 504 and r.json()["error"]["code"] == "publish_unknown"
        async with coredis.Redis.from_url(REDIS) as redis:
            assert await redis.hget(f"{prefix}:seq", "accidents") == b"1"  # it was in fact published
        assert a.broker.lost_alerts == {("accidents", "publish_unknown"): 1}
        assert broker_lines(caplog, "ALERT of topic accidents (seq unassigned) from the HTTP API: sent to Redis, which did not answer")
        proxy.thaw()
        await until(lambda: a.broker.ready)
        metrics = (await http.get("/metrics")).text
        assert 'uipd_alerts_lost_total{reason="publish_unknown",topic="accidents"} 1.0' in metrics


async def test_each_api_publish_is_answered_with_its_own_outcome(prefix):
    async with running_daemon(config(prefix, "a")) as a, api_client(a) as http:
        await until(lambda: a.broker.ready)
        async with coredis.Redis.from_url(REDIS) as redis:
            await redis.hset(f"{prefix}:seq", {"weather": "not a number"})  # Redis refuses weather's HINCRBY
        answers = {}

        async def post(i, topic):
            answers[(topic, i)] = await http.post("/api/publish", json={"topic": topic, "type": "ALERT", "data": {"i": i}})

        async with trio.open_nursery() as nursery:  # at once, so they share batches
            for i in range(10):
                for topic in ("accidents", "weather"):
                    nursery.start_soon(post, i, topic)
        good = [answers[("accidents", i)] for i in range(10)]
        bad = [answers[("weather", i)] for i in range(10)]
        assert [r.status_code for r in good] == [200] * 10
        assert sorted(r.json()["seq"] for r in good) == list(range(1, 11))
        assert {(r.status_code, r.json()["error"]["code"]) for r in bad} == {(503, "publish_failed")}
        assert "not an integer" in bad[0].json()["error"]["message"]
        async with coredis.Redis.from_url(REDIS) as redis:
            assert await redis.hget(f"{prefix}:seq", "accidents") == b"10"  # what was answered 200 is what was published
        assert a.broker.ready  # a refused message is not an outage
        assert a.broker.lost_alerts == {("weather", "publish_failed"): 10}


async def test_a_sources_lost_alerts_are_logged_with_the_source_and_counted(prefix, caplog):
    source = {"sources": {"count": {"plugin": "counter", "interval": 0.02, "alert_every": 1, "topic": "accidents"}}}
    async with running_daemon(config(prefix, "a", **source)) as a:
        c = await connect(a)
        await c.recv_until(lambda m: m["type"] == "ALERT")
        async with coredis.Redis.from_url(REDIS) as redis:
            await redis.hset(f"{prefix}:seq", {"accidents": "broken"})
        await until(lambda: a.broker.lost_alerts[("accidents", "publish_failed")] >= 3)
        lines = broker_lines(caplog, "ALERT of topic accidents (seq unassigned) from source count: not published: Redis refused it")
        assert len(lines) >= 3
        assert broker_lines(caplog, "refused by Redis, not published") and all("from count" in r.getMessage() for r in broker_lines(caplog, "refused by Redis"))


async def test_alerts_published_while_a_node_joins_are_counted_for_its_early_clients_and_left_in_history(prefix, caplog, monkeypatch):
    async with running_daemon(config(prefix, "a")) as a, api_client(a) as http:
        await until(lambda: a.broker.ready)
        original = RedisBroker._load_state
        early = trio.Event()

        async def load_state(self, client, *args):
            if self.node_id == "b" and not self._sessions:
                await early.wait()
                # b is subscribed but has not loaded yet: these are in the state it loads
                for body in ({"topic": "accidents", "type": "ALERT", "data": {"m": "join"}}, {"topic": "accidents", "data": [{"id": "x"}]}):
                    assert (await http.post("/api/publish", json=body)).status_code == 200
            return await original(self, client, *args)

        monkeypatch.setattr(RedisBroker, "_load_state", load_state)
        async with running_daemon(config(prefix, "b")) as b:
            c = await connect(b)  # connected before b loaded the cluster's state: it missed the ALERT
            early.set()
            await until(lambda: b.broker.ready)
            resync = await c.recv_until(lambda m: m["type"] == "SNAPSHOT")
            assert resync["resync"] is True and [e["id"] for e in resync["data"]["accidents"]] == ["x"]
            assert resync["positions"]["accidents"] == {"seq": 2, "epoch": b.hub.topics.topics["accidents"].epoch}
            assert (await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"m": "after"}})).json()["seq"] == 3
            assert (await c.recv_until(lambda m: m["type"] == "ALERT"))["seq"] == 3  # live messages flow as before
            await until(lambda: b.broker.lost_alerts)
            assert b.broker.lost_alerts == {("accidents", "join"): 1}  # the ALERT, not the UPDATE (it is in the state)
            assert broker_lines(caplog, "ALERT of topic accidents (seq 1): published while this node (re)loaded")
            # A client that comes later and asks from before it recovers it from the history in Redis.
            since = quote(json.dumps({"accidents": {"seq": 0, "epoch": resync["positions"]["accidents"]["epoch"]}}))
            late = await RawClient.connect(b.ws_port, f"/?topics=accidents&since={since}")
            await late.recv_json()
            answer = await late.recv_json()
            assert answer["recovered"] == ["accidents"] and answer["alertsLost"] == []
            assert [(m["type"], m["seq"]) for m in [await late.recv_json() for _ in range(3)]] == [("ALERT", 1), ("UPDATE", 2), ("ALERT", 3)]


async def test_a_node_joining_without_clients_counts_no_alert_lost(prefix, monkeypatch):
    async with running_daemon(config(prefix, "a")) as a, api_client(a) as http:
        await until(lambda: a.broker.ready)
        original = RedisBroker._load_state

        async def load_state(self, client, *args):
            if self.node_id == "b" and not self._sessions:
                assert (await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"m": "join"}})).status_code == 200
            return await original(self, client, *args)

        monkeypatch.setattr(RedisBroker, "_load_state", load_state)
        async with running_daemon(config(prefix, "b")) as b:
            await until(lambda: b.broker.ready)
            c = await connect(b)
            assert (await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"m": "after"}})).json()["seq"] == 2
            assert (await c.recv_json())["seq"] == 2
            assert not b.broker.lost_alerts  # no client of b missed it: it is in the history for those who come back


ALERT = {"topic": "accidents", "type": "ALERT", "data": {"m": "crash"}}
UPDATE = {"topic": "accidents", "data": [{"id": "x"}]}


async def cut_off_while(proxy, node, publisher, bodies):
    """Cut ``node`` (behind ``proxy``) off from Redis, publish ``bodies`` through ``publisher`` (all
    answered 200), bring it back; returns when ``node`` is ready again."""
    proxy.freeze()
    await until(lambda: not node.broker.ready, timeout=3)
    async with api_client(publisher) as http:
        for body in bodies:
            assert (await http.post("/api/publish", json=body)).status_code == 200
    proxy.thaw()
    await until(lambda: node.broker.ready, timeout=6)


NO_HISTORY = {"history": {"size": 0}}
"""Without history streams, a node back from a cut-off cannot catch up: the ALERT record's accounting
(with history, tests/cluster/test_recovery.py)."""


async def test_alerts_published_while_a_node_was_cut_off_are_counted_and_logged_by_seq_and_its_clients_resynced(prefix, proxy, caplog):
    async with running_daemon(config(prefix, "a", proxy.url, **NO_HISTORY)) as a, running_daemon(config(prefix, "b", **NO_HISTORY)) as b:
        await until(lambda: a.broker.ready and b.broker.ready)
        c = await connect(a)
        await cut_off_while(proxy, a, b, [ALERT, UPDATE, ALERT, ALERT, UPDATE])  # ALERTs: seq 1, 3, 4
        resync = await c.recv_until(lambda m: m["type"] == "SNAPSHOT")
        assert resync["resync"] is True and [e["id"] for e in resync["data"]["accidents"]] == ["x"]
        # Redis' ALERT record tells which of the missed seqs were ALERTs: none is of unknown kind
        assert a.broker.lost_alerts == {("accidents", "cut_off"): 3} and not a.broker.missed
        assert not b.broker.lost_alerts and not b.broker.missed
        for seq in (1, 3, 4):
            assert len(broker_lines(caplog, f"ALERT of topic accidents (seq {seq}): published while this node was cut off from Redis")) == 1
        assert not broker_lines(caplog, "(seq 2)") and not broker_lines(caplog, "(seq 5)")
        assert broker_lines(caplog, "topic accidents: 5 message(s) (seq 1-5) were published while this node was cut off from Redis; "
                                    "its clients get their state in the resync; 3 of them ALERTs (lost)")
        async with api_client(a) as http:
            metrics = (await http.get("/metrics")).text
        assert 'uipd_alerts_lost_total{reason="cut_off",topic="accidents"} 3.0' in metrics
        assert 'uipd_cluster_messages_missed_total{topic="accidents"}' not in metrics


async def test_alerts_published_while_a_node_reloads_after_a_cut_off_are_counted_once(prefix, proxy, monkeypatch):
    # An ALERT published between the re-subscribe and the reload of a node back from a cut-off
    # reaches it through the channel with a seq its load covers: the ALERT record counted it
    # already, so it is not counted again as "join", nor its seq as missed.
    async with running_daemon(config(prefix, "a", proxy.url, **NO_HISTORY)) as a, running_daemon(config(prefix, "b", **NO_HISTORY)) as b, api_client(b) as http:
        await until(lambda: a.broker.ready and b.broker.ready)
        original = RedisBroker._load_state

        async def load_state(self, client, *args):
            if self.node_id == "a" and self._sessions == 1:  # a is subscribed again, has not loaded yet
                for body in (ALERT, UPDATE):
                    assert (await http.post("/api/publish", json=body)).status_code == 200
            return await original(self, client, *args)

        monkeypatch.setattr(RedisBroker, "_load_state", load_state)
        c = await connect(a)
        await cut_off_while(proxy, a, b, [ALERT])  # seq 1; then seq 2 (ALERT) and 3 in the reload window
        assert (await http.post("/api/publish", json=ALERT)).json()["seq"] == 4
        assert (await c.recv_until(lambda m: m["type"] == "ALERT"))["seq"] == 4  # live again, after 2 and 3 came through
        assert a.broker.lost_alerts == {("accidents", "cut_off"): 2} and not a.broker.missed


async def test_a_cut_off_longer_than_the_alert_record_counts_the_rest_as_missed(prefix, proxy, caplog, monkeypatch):
    monkeypatch.setattr("uipd.cluster.losses.LOGGED_LOST", 1)
    b_config = config(prefix, "b", **NO_HISTORY)
    b_config["broker"]["alert_record"] = 2  # the publishing node's bound trims the record
    async with running_daemon(config(prefix, "a", proxy.url, **NO_HISTORY)) as a, running_daemon(b_config) as b:
        await until(lambda: a.broker.ready and b.broker.ready)
        await cut_off_while(proxy, a, b, [UPDATE, ALERT, ALERT, ALERT, UPDATE, ALERT])  # ALERTs: 2, 3, 4, 6
        async with coredis.Redis.from_url(REDIS) as redis:
            assert await redis.lrange(f"{prefix}:alerts:accidents", 0, -1) == [b"4", b"6"]
            assert await redis.hget(f"{prefix}:alert-floor", "accidents") == b"4"  # every ALERT from 4 on
        assert a.broker.lost_alerts == {("accidents", "cut_off"): 2}
        assert a.broker.missed == {"accidents": 3}  # seq 1-3: their kind is no longer known
        assert broker_lines(caplog, "topic accidents: 3 message(s) (seq 1-3) missed while cut off are older than Redis' ALERT record "
                                    "(it holds every ALERT from seq 4 on; [broker] alert_record)")
        # the log is bounded: LOGGED_LOST lines one by one, then one line for the rest
        assert len(broker_lines(caplog, "ALERT of topic accidents (seq 4): published while this node was cut off")) == 1
        assert broker_lines(caplog, "1 more ALERT(s) of topic accidents (seqs 6-6, not logged one by one)")
        assert not broker_lines(caplog, "(seq 6)")


async def test_a_failed_reconnect_attempt_logs_no_empty_traceback(prefix, proxy, caplog):
    # coredis logs "Connection attempt failed unexpectedly!" with logger.exception outside any
    # except block: the formatter printed "NoneType: None" under it, on every attempt.
    async with running_daemon(config(prefix, "a", proxy.url)) as a:
        await until(lambda: a.broker.ready)
        proxy.freeze()
        attempts = lambda: [r for r in caplog.records if r.name == "coredis" and "Connection attempt failed" in r.getMessage()]
        await until(lambda: attempts(), timeout=5)
        proxy.thaw()
        formatter = logging.Formatter()
        assert all("NoneType: None" not in formatter.format(r) for r in caplog.records)


async def test_redis_unreachable_names_an_error_that_has_no_text(prefix, caplog, monkeypatch):
    """Some of coredis's errors carry no text (a URL it cannot use ended in a bare AssertionError):
    the log said ``Redis unreachable ()``.  It names the error's type then."""
    caplog.set_level(logging.INFO)

    async def session(self, on_up):
        raise AssertionError()

    monkeypatch.setattr(RedisBroker, "_session", session)
    async with running_daemon(config(prefix, "a")):
        await until(lambda: broker_lines(caplog, "Redis unreachable"))
    assert [r.getMessage() for r in broker_lines(caplog, "Redis unreachable")] == [
        "cluster broker: Redis unreachable (AssertionError); retrying, clients stay connected"
    ]
