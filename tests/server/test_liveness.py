"""PROTOCOL.md section 5: heartbeat, slow consumers (both policies), graceful shutdown."""

import trio

from tests.conftest import api_client, connect
from tests.wsclient import Closed


async def test_client_answering_pings_stays_and_silent_client_is_dropped(daemon_factory):
    async with daemon_factory({"heartbeat": {"interval": 0.2, "timeout": 0.7}}) as d:
        alive = await connect(d)
        silent = await connect(d, auto_pong=False)
        # the alive client reads (and so answers pings) for 2 s, far past the timeout
        with trio.move_on_after(2.0):
            while True:
                await alive.recv_json(timeout=3)
        assert alive.pings_seen >= 5
        assert await silent.expect_close(timeout=3) in (None, 1006)
        assert silent.pings_seen >= 1
        assert len(d.connections) == 1
        assert d.hub.counters.heartbeat_drops == 1
        await alive.send_json({"action": "ping"})
        assert (await alive.recv_json())["type"] == "PONG"


async def test_an_idle_clients_pings_are_written_by_the_heartbeat_pass_itself(daemon_factory):
    # An idle client's ping is one direct write from the heartbeat pass: no queue, no flusher pass.
    async with daemon_factory({"heartbeat": {"interval": 0.2, "timeout": 5}}) as d:
        c = await connect(d)
        await c.barrier()
        rounds, writes, pings = d.flusher.rounds, d.flusher.writes, c.pings_seen
        with trio.move_on_after(1.2):
            while True:
                await c.recv_json(timeout=3)
        assert c.pings_seen - pings >= 4
        assert d.flusher.rounds == rounds  # nothing went through the flusher
        assert d.flusher.writes - writes >= c.pings_seen - pings
        assert len(d.connections) == 1


async def test_ping_action_counts_as_sign_of_life(daemon_factory):
    async with daemon_factory({"heartbeat": {"interval": 0.2, "timeout": 0.7}}) as d:
        c = await connect(d, auto_pong=False)
        for _ in range(10):
            await c.send_json({"action": "ping"})
            msg = await c.recv_json()
            assert msg["type"] == "PONG"
            await trio.sleep(0.2)
        assert len(d.connections) == 1


async def publish_many(d, n, size, topic="accidents", kind="UPDATE"):
    async with api_client(d) as http:
        for i in range(n):
            body = {"topic": topic, "type": kind, "data": [{"id": f"e{i % 10}", "n": i, "pad": "x" * size}]}
            if kind == "ALERT":
                body["data"] = {"n": i, "pad": "x" * size}
            r = await http.post("/api/publish", json=body)
            assert r.status_code == 200


async def publish_while_reading(d, reader, n, size):
    """Publish n UPDATEs while ``reader`` reads; return the seqs it received."""
    received = []

    async def read():
        while True:
            received.append((await reader.recv_json())["seq"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await publish_many(d, n, size)
        with trio.fail_after(10):
            while len(received) < n:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return received


async def test_slow_consumer_resync_others_unaffected(daemon_factory):
    async with daemon_factory({"server": {"max_queue_bytes": 64 * 1024, "slow_consumer": "resync"}}) as d:
        slow = await connect(d)
        fast = await connect(d)
        # the slow client never reads while ~4 MB are published
        assert await publish_while_reading(d, fast, 400, 10_000) == list(range(1, 401))
        assert d.hub.counters.resyncs >= 1
        session = next(c.session for c in d.connections.values() if c.session.outbound.resync_pending or c.session.outbound.dropped_updates)
        assert session.outbound.pending_bytes <= 2 * 64 * 1024 + 20_000
        # the slow client reads again: old updates, then exactly one resync SNAPSHOT, then live updates
        msgs = []
        with trio.move_on_after(2):
            while True:
                msgs.append(await slow.recv_json())
        resyncs = [m for m in msgs if m["type"] == "SNAPSHOT"]
        assert len(resyncs) == 1 and resyncs[0]["resync"] is True
        assert {e["id"] for e in resyncs[0]["data"]["accidents"]} == {f"e{i}" for i in range(10)}
        assert max(e["n"] for e in resyncs[0]["data"]["accidents"]) == 399
        await publish_many(d, 1, 10)
        live = await slow.recv_json()
        assert live["type"] == "UPDATE" and live["seq"] == 401


async def test_alerts_are_never_dropped_for_a_slow_consumer(daemon_factory):
    async with daemon_factory({"server": {"max_queue_bytes": 64 * 1024, "slow_consumer": "resync"}}) as d:
        slow = await connect(d)
        await publish_many(d, 300, 10_000)  # UPDATEs overflow the slow client's queue
        await publish_many(d, 3, 100, kind="ALERT")
        alerts = []
        try:
            with trio.move_on_after(2):
                while True:
                    msg = await slow.recv_json()
                    if msg["type"] == "ALERT":
                        alerts.append(msg["seq"])
        except Closed as closed:
            assert closed.code == 4008  # told, not silently dropped
        else:
            assert alerts == [301, 302, 303]


async def test_slow_consumer_disconnect_policy_closes_4008(daemon_factory):
    async with daemon_factory({"server": {"max_queue_bytes": 64 * 1024, "slow_consumer": "disconnect", "close_timeout": 0.5}}) as d:
        slow = await connect(d)
        fast = await connect(d)
        assert await publish_while_reading(d, fast, 300, 10_000) == list(range(1, 301))
        assert d.hub.counters.slow_disconnects == 1
        code = await slow.expect_close(timeout=5)
        assert code in (4008, None)  # 4008 when the close frame could follow the data in flight
        with trio.fail_after(5):
            while len(d.connections) != 1:
                await trio.sleep(0.05)


async def test_shutdown_closes_every_client_with_1001(daemon_factory):
    async with daemon_factory() as d:
        clients = [await connect(d) for _ in range(3)]
        d.request_shutdown()
        for c in clients:
            assert await c.expect_close() == 1001
