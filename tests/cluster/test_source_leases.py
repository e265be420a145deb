"""A source's publications in a cluster, against the real Redis (issue 12, follow-ups of items 5
and 6): a publication that was lost does not stay in the source's expected state (``replace``
sends it again), publications queued on a node whose lease passed to another node meanwhile are
dropped, not published after the new leader's, and ``/api/stats`` says whether a source runs on
this node and whether this node holds its lease.

Each test has its own key prefix (the ``prefix`` fixture deletes its keys)."""

import logging

import coredis
import pytest
import trio

from tests.cluster.test_cluster import REDIS, redis_up, until
from tests.cluster.test_faults import TTL, broker_lines, config, probe_plugin
from tests.conftest import api_client, connect, running_daemon
from tests.sources.test_supervision import inline_plugin

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


def entity(daemon, topic="fleet"):
    return daemon.hub.topics.state_of(topic).get("x")


async def test_a_refused_update_is_sent_again_by_the_next_replace(prefix, caplog):
    wanted = {"v": 1}

    class Replacer:
        topics = ("fleet",)

        async def run(self, publisher):
            while True:  # what a polling source does: the whole state, every round
                try:
                    publisher.replace("fleet", [{"id": "x", "v": wanted["v"]}])
                except ValueError:
                    pass
                await trio.sleep(0.02)

    async with running_daemon(config(prefix, "a", sources={"r": {"plugin": "replacer"}}), plugins=(inline_plugin("replacer", Replacer),)) as a:
        await until(lambda: entity(a) == {"id": "x", "v": 1})
        async with coredis.Redis.from_url(REDIS) as redis:
            seq = await redis.hget(f"{prefix}:seq", "fleet")
            await redis.hset(f"{prefix}:seq", {"fleet": "broken"})  # Redis refuses the topic's next publish
            wanted["v"] = 2
            await until(lambda: broker_lines(caplog, "refused by Redis, not published"))
            await redis.hset(f"{prefix}:seq", {"fleet": seq})
        # the refused change was not applied anywhere: the source's next rounds send it again
        await until(lambda: entity(a) == {"id": "x", "v": 2}, timeout=3)
        assert a.broker.ready


def writer_plugin(active, node):
    """A leader source "writer" that publishes an ALERT and an UPDATE of entity x (``by`` its node)
    every 10 ms while it runs on ``node``, going on when a publish is refused (Redis away)."""

    class Writer:
        topics = ("fleet",)

        async def run(self, publisher):
            active[node] = True
            try:
                for n in range(10**9):
                    try:
                        publisher.alert("fleet", {"by": node, "n": n})
                        publisher.update("fleet", [{"id": "x", "by": node, "n": n}])
                    except ValueError:
                        pass
                    await trio.sleep(0.01)
            finally:
                active[node] = False

    return inline_plugin("writer", Writer)


async def test_publications_queued_on_a_node_that_lost_the_lease_are_dropped_not_published_late(prefix, proxy, caplog):
    active = {}
    source = {"sources": {"writer": {"plugin": "writer"}}}
    async with running_daemon(config(prefix, "a", proxy.url, **source), plugins=(writer_plugin(active, "a"),)) as a:
        await until(lambda: active.get("a") and entity(a) is not None)
        async with running_daemon(config(prefix, "b", **source), plugins=(writer_plugin(active, "b"),)) as b:
            await until(lambda: b.broker.ready)
            c = await connect(b)
            # a keeps publishing into its queue until its session times out, then its lease moves to b
            proxy.freeze()
            await until(lambda: active.get("b") and (entity(b) or {}).get("by") == "b", timeout=4 * TTL)
            assert not active.get("a")
            proxy.thaw()
            await until(lambda: a.broker.ready, timeout=8)
            # a's queue is in order: once its marker is published, so is (or was dropped) all before it
            async with api_client(a) as http:
                r = await http.post("/api/publish", json={"topic": "fleet", "type": "ALERT", "data": {"by": "marker"}})
            assert r.status_code == 200, r.text
            seen = []
            while (m := await c.recv_json()).get("seq") != r.json()["seq"]:
                if m["type"] in ("UPDATE", "ALERT"):
                    seen.append(m["data"][0]["by"] if m["type"] == "UPDATE" else m["data"]["by"])
            # b's clients never got a's data after b's: a's queued publications reached Redis after
            # b's, and Redis dropped them (a's lease token was no longer the lease's value)
            assert "b" in seen and "a" not in seen[seen.index("b"):]
            await until(lambda: (entity(b) or {}).get("by") == "b" and entity(a) == entity(b))
            assert not active.get("a") and active.get("b")
            assert a.broker.lost_alerts[("fleet", "lease_lost")] > 0
            assert broker_lines(caplog, "ALERT of topic fleet (seq unassigned) from source writer: not published: its source's lease had passed")
            assert broker_lines(caplog, "dropped by Redis, so that they do not land after the new holder's")
            async with api_client(a) as http:
                metrics = (await http.get("/metrics")).text
            assert 'uipd_alerts_lost_total{reason="lease_lost",topic="fleet"}' in metrics

async def test_stats_say_whether_a_source_runs_here_and_whether_this_node_holds_its_lease(prefix):
    active = {}
    probe = {"sources": {"probe": {"plugin": "probe"}}}
    async with running_daemon(config(prefix, "a", **probe), plugins=(probe_plugin(active, "a"),)) as a:
        await until(lambda: active.get("a"))
        async with running_daemon(config(prefix, "b", **probe), plugins=(probe_plugin(active, "b"),)) as b:
            await until(lambda: b.broker.ready)
            async with api_client(a) as http_a, api_client(b) as http_b:

                async def probe_of(http):
                    return (await http.get("/api/stats")).json()["sources"]["probe"]

                assert {k: (await probe_of(http_a))[k] for k in ("running", "leader")} == {"running": True, "leader": True}
                assert {k: (await probe_of(http_b))[k] for k in ("running", "leader")} == {"running": False, "leader": False}
                async with coredis.Redis.from_url(REDIS) as redis:  # the lease goes elsewhere: a's renewal is refused
                    await redis.set(f"{prefix}:lease:probe", "elsewhere", px=60000)
                await until(lambda: not active.get("a"), timeout=2 * TTL)
                # a's lease loop goes on (it retries to acquire), its source does not run
                with trio.fail_after(1):
                    while (await probe_of(http_a))["running"]:
                        await trio.sleep(0.02)
                assert (await probe_of(http_a))["leader"] is False
                assert (await probe_of(http_b))["leader"] is False and not active.get("b")
