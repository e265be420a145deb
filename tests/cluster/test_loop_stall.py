"""A node whose trio loop stalls (synchronous work: a storm of accepts and handshakes) for longer
than ``command_timeout`` keeps its session with Redis: the replies were there, the loop did not
look.  No session ends, no client is resynced, and a canary client gets every message published
during and after the stall, in seq order.  A Redis really gone still ends the session
(tests/cluster/test_faults.py).

The stall is ``time.sleep`` in a task of the test's loop (the daemon's); the messages published
during it come from a thread with a loop and a Redis connection of its own.  Each test has its
own key prefix and deletes its keys."""

from __future__ import annotations

import logging
import threading
import time

import coredis
import pytest
import trio

from tests.cluster.test_cluster import REDIS, redis_up, until
from tests.conftest import running_daemon
from tests.wsclient import RawClient
from uipd.cluster.outbox import Pending
from uipd.cluster.scripts import PUBLISH_SCRIPT, Keys, publish_call
from uipd.core import publish
from uipd.core.topics import new_epoch

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")

TIMEOUT = 0.2
STALL = 3 * TIMEOUT


def config(prefix: str) -> dict:
    broker = {"kind": "redis", "url": REDIS, "prefix": prefix, "node_id": "a", "command_timeout": TIMEOUT, "ping_interval": TIMEOUT, "publish_timeout": 1.0}
    return {"broker": broker, "server": {"topics": ["accidents", "weather"]}}


def entity(i: int) -> publish.Publication:
    return publish.update("accidents", [{"id": f"e{i % 3}", "n": i}])


def stall_while_published_outside(prefix: str, seqs: range) -> None:
    """Stall this loop for STALL s while another thread publishes len(seqs) messages through Redis (spread
    over the first half of the stall)."""

    async def outside() -> None:
        async with coredis.Redis.from_url(REDIS) as redis:
            for i in seqs:
                keys, args = publish_call(Keys(prefix), 1000, 1000, new_epoch(), [Pending(f"outside:{i}", entity(i), "2026-01-01T00:00:00Z", "")])
                await redis.eval(PUBLISH_SCRIPT, keys=keys, args=args)
                await trio.sleep(STALL / 2 / len(seqs))

    thread = threading.Thread(target=trio.run, args=(outside,))
    thread.start()
    time.sleep(STALL)  # the daemon's loop does not run
    thread.join()


async def messages(c: RawClient, upto: int) -> list[dict]:
    """The canary's messages until the one of seq ``upto`` (SNAPSHOTs included, so a resync shows)."""
    got: list[dict] = []
    while not got or got[-1].get("seq") != upto:
        m = await c.recv_json(timeout=5)
        if m["type"] in ("UPDATE", "ALERT", "SNAPSHOT"):
            got.append(m)
    return got


async def test_a_loop_stall_longer_than_command_timeout_keeps_the_session_and_the_canary_gets_every_message_in_order(prefix, caplog):
    caplog.set_level(logging.INFO)
    async with running_daemon(config(prefix)) as a:
        await until(lambda: a.broker.ready)
        canary = await RawClient.connect(a.ws_port, "/?topics=accidents")
        assert (await canary.recv_json())["type"] == "connection" and (await canary.recv_json())["type"] == "SNAPSHOT"
        sessions, resyncs = a.broker._sessions, a.hub.counters.resyncs

        # 1. A publish in flight (sent, its reply due during the stall), and publishes from
        # elsewhere during the stall.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.broker.publish, entity(1))  # the HTTP API's call: it waits for its outcome
            waiting = a.broker.outbox._waiters
            while not any(item.state == "sent" for item in waiting.values()):  # its Redis call is armed
                await trio.sleep(0)
            stall_while_published_outside(prefix, range(2, 5))
        a.broker.submit(entity(5))
        first = await messages(canary, 5)

        # 2. Between publishes, PINGs and node announcements going on; twice in a row.
        await trio.sleep(2.5 * TIMEOUT)
        stall_while_published_outside(prefix, range(6, 9))
        stall_while_published_outside(prefix, range(9, 10))
        a.broker.submit(entity(10))
        second = await messages(canary, 10)

        got = first + second
        assert [m["type"] for m in got] == ["UPDATE"] * 10, got  # no resync SNAPSHOT
        assert [m["seq"] for m in got] == list(range(1, 11))
        assert a.broker.ready and a.broker._sessions == sessions
        assert a.hub.counters.resyncs == resyncs and a.broker.caught_up == 0
        assert not a.broker.lost_alerts
        assert not [r for r in caplog.records if r.name == "uipd.cluster.redis" and r.levelno >= logging.WARNING]
        await canary.aclose()


async def test_a_brief_cut_off_before_anything_was_published_resyncs_no_client(prefix, proxy):
    """A cluster that loaded but never published has epochs and no seq hash: not a Redis that lost
    its data (which would rotate the epochs and resync every client of every node)."""
    cfg = config(prefix)
    cfg["broker"]["url"] = proxy.url
    async with running_daemon(cfg) as a:
        await until(lambda: a.broker.ready)
        canary = await RawClient.connect(a.ws_port, "/?topics=accidents")
        assert (await canary.recv_json())["type"] == "connection" and (await canary.recv_json())["type"] == "SNAPSHOT"
        epoch = a.hub.topics.topics["accidents"].epoch
        proxy.freeze()
        await until(lambda: not a.broker.ready, timeout=3)
        proxy.thaw()
        await until(lambda: a.broker.ready, timeout=6)
        a.broker.submit(entity(1))
        assert [m["type"] for m in await messages(canary, 1)] == ["UPDATE"]
        assert a.hub.topics.topics["accidents"].epoch == epoch and a.hub.counters.resyncs == 0
        await canary.aclose()
