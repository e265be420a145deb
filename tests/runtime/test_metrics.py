"""GET /metrics: values move as clients connect and messages flow (real sockets, parsed with
prometheus_client's parser); bounded labels; one registry per daemon."""

from __future__ import annotations

import trio
from wsproto.events import CloseConnection

from tests.conftest import api_client, connect
from tests.runtime.support import metric, parse_metrics
from tests.wsclient import Rejected, RawClient


async def scrape(d) -> dict:
    async with api_client(d) as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(r.text)


async def close_cleanly(client: RawClient, code: int = 1000) -> None:
    await client.send_raw(client.ws.send(CloseConnection(code=code)))
    assert await client.expect_close() == code


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_metrics_move_with_clients_and_messages(daemon_factory):
    async with daemon_factory() as d:
        m = await scrape(d)
        assert metric(m, "uipd_clients") == 0
        assert metric(m, "uipd_connections_opened_total") == 0
        # every configured topic has its series from the start, at 0
        assert metric(m, "uipd_messages_published_total", topic="cameras", type="UPDATE") == 0
        assert ("uipd_messages_published_total", (("topic", "cameras"), ("type", "ALERT"))) in m

        a = await connect(d)
        b = await connect(d)
        await b.send_json({"action": "subscribe", "topics": ["weather"]})
        await b.recv_json()
        m = await scrape(d)
        assert metric(m, "uipd_clients") == 2
        assert metric(m, "uipd_connections_opened_total") == 2
        assert metric(m, "uipd_client_queue_bytes_count") == 2
        assert metric(m, "uipd_topic_subscribers", topic="accidents") == 1
        assert metric(m, "uipd_topic_subscribers", topic="weather") == 2

        async with api_client(d) as http:
            for i in range(3):
                r = await http.post("/api/publish", json={"topic": "accidents", "data": [{"id": f"a{i}", "x": i}]})
                assert r.status_code == 200
            r = await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"message": "crash"}})
            assert r.status_code == 200
            r = await http.post("/api/broadcast", json={"type": "ALERT", "data": {"message": "all"}})
            assert r.status_code == 200
            r = await http.post("/api/publish", json={"topic": "nope", "data": []})
            assert r.status_code == 404
        for _ in range(5):
            await a.recv_json()
        await b.recv_json()  # the broadcast

        m = await scrape(d)
        assert metric(m, "uipd_messages_published_total", topic="accidents", type="UPDATE") == 3
        assert metric(m, "uipd_messages_published_total", topic="accidents", type="ALERT") == 1
        assert metric(m, "uipd_broadcasts_total", type="ALERT") == 1
        assert metric(m, "uipd_deliveries_total") == 3 + 1 + 2
        assert metric(m, "uipd_sent_bytes_total") > 6 * 40
        assert metric(m, "uipd_topic_seq_total", topic="accidents") == 4
        assert metric(m, "uipd_topic_entities", topic="accidents") == 3
        assert metric(m, "uipd_publish_seconds_count") == 5
        assert metric(m, "uipd_publish_seconds_sum") > 0
        # the write path: every delivery above went out in direct writes (nothing filled a socket)
        assert metric(m, "uipd_write_passes_total") >= 1
        assert metric(m, "uipd_direct_writes_total") >= 1
        assert metric(m, "uipd_direct_write_frames_total") >= metric(m, "uipd_direct_writes_total")
        assert metric(m, "uipd_direct_write_frames_total") >= 2 * 2 + 6  # connection + SNAPSHOT each, the deliveries
        # labels only for configured topics: the refused "nope" left no series
        assert not any(dict(labels).get("topic") == "nope" for _, labels in m)

        # refused handshakes by reason
        try:
            await RawClient.connect(d.ws_port, "/elsewhere")
        except Rejected as rej:
            assert rej.status == 404
        m = await scrape(d)
        assert metric(m, "uipd_handshakes_refused_total", reason="not_found") == 1

        # closes by code: the peer's 1000, a TCP drop (1006), the server's 1008 (rate limit)
        await close_cleanly(a)
        await b.aclose()
        await wait_until(lambda: not d.connections)
        m = await scrape(d)
        assert metric(m, "uipd_clients") == 0
        assert metric(m, "uipd_connections_closed_total", code="1000") == 1
        assert metric(m, "uipd_connections_closed_total", code="1006") == 1


async def test_server_close_codes_and_client_errors(daemon_factory):
    async with daemon_factory({"server": {"rate_limit": 1.0, "rate_burst": 1, "rate_limit_strikes": 2}}) as d:
        c = await connect(d)
        for _ in range(5):
            await c.send_text("not json")
        assert await c.expect_close() == 1008
        await wait_until(lambda: not d.connections)
        m = await scrape(d)
        assert metric(m, "uipd_connections_closed_total", code="1008") == 1
        assert metric(m, "uipd_rate_limit_closes_total") == 1
        assert metric(m, "uipd_client_errors_total") >= 1


async def test_slow_consumer_resyncs_counted_per_topic(daemon_factory):
    async with daemon_factory({"server": {"max_queue_bytes": 64 * 1024, "slow_consumer": "resync"}}) as d:
        slow = await connect(d)  # never reads
        async with api_client(d) as http:
            for i in range(300):
                r = await http.post("/api/publish", json={"topic": "cameras", "data": [{"id": f"c{i % 10}", "pad": "x" * 10_000}]})
                assert r.status_code == 200
        m = await scrape(d)
        assert metric(m, "uipd_slow_consumer_resyncs_total", topic="cameras") >= 1
        assert metric(m, "uipd_slow_consumer_resyncs_total", topic="cameras") == d.hub.counters.resyncs
        assert metric(m, "uipd_slow_consumer_disconnects_total", topic="cameras") == 0
        # the slow client's queue shows in the histogram
        session = next(iter(d.hub.sessions.values()))
        assert metric(m, "uipd_client_queue_bytes_sum") == session.outbound.pending_bytes
        assert metric(m, "uipd_client_queue_bytes_bucket", le="+Inf") == 1
        await slow.aclose()


async def test_heartbeat_drops_and_sources(daemon_factory, tmp_path):
    feed = tmp_path / "feed.json"
    feed.write_text('{"parking": [{"id": "p1", "free": 3}]}')
    raw = {"heartbeat": {"interval": 0.2, "timeout": 0.5}, "sources": {"lots": {"plugin": "file", "path": str(feed), "poll_interval": 0.1}}}
    async with daemon_factory(raw) as d:
        silent = await connect(d, auto_pong=False)
        await wait_until(lambda: d.hub.counters.heartbeat_drops == 1)
        await silent.aclose()
        await wait_until(lambda: all(s.ready for s in d.sources))
        m = await scrape(d)
        assert metric(m, "uipd_heartbeat_drops_total") == 1
        assert metric(m, "uipd_source_running", source="lots") == 1
        assert metric(m, "uipd_source_ready", source="lots") == 1
        assert metric(m, "uipd_source_restarts_total", source="lots") == 0
        assert metric(m, "uipd_source_errors_total", source="lots") == 0
        assert metric(m, "uipd_topic_entities", topic="parking") == 1


async def test_two_daemons_have_their_own_registries(daemon_factory):
    async with daemon_factory() as d1, daemon_factory() as d2:
        client = await connect(d1)
        m1, m2 = await scrape(d1), await scrape(d2)
        assert metric(m1, "uipd_clients") == 1
        assert metric(m2, "uipd_clients") == 0
        await client.aclose()
