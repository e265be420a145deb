"""The http-json source against a real local HTTP server: conditional GETs, diffs, errors."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import trio
from httpjson_support import JsonServer
from trio_websocket import open_websocket_url

from uipd.config import ConfigError, structure_strict
from uipd.testing import FakePublisher, run_daemon, serve_asgi
from uipd_http_json.options import HttpJsonOptions
from uipd_http_json.plugin import create, uipd_source_types

ITEMS = [{"key": f"k{i}", "free": i} for i in range(5)]


def feed(items):
    return {"data": {"items": items, "total": len(items)}}


def make(url, **kw):
    return create(HttpJsonOptions(url=url, topic="parking", selector="$.data.items[*]", id_field="key", interval=0.05, **kw))


async def poll_until(source, n):
    with trio.fail_after(5):
        while source.polls < n:
            await trio.sleep(0.01)


def test_hook_and_strict_options():
    (st,) = uipd_source_types()
    assert st.name == "http-json" and st.options is HttpJsonOptions
    ok = structure_strict({"url": "http://x/feed", "topic": "t", "headers": {"X-Key": "1"}}, HttpJsonOptions, file="u.toml", root="sources.p")
    assert ok.interval == 30.0 and ok.headers == {"X-Key": "1"} and ok.conditional is True
    bad = [
        ({"url": "http://x", "topic": "t", "interval": "5"}, "sources.p.interval: expected a number"),
        ({"url": "http://x", "topic": "t", "headers": {"a": 1}}, "sources.p.headers"),
        ({"url": "http://x", "topic": "t", "extra": 1}, "unknown key 'extra'"),
        ({"url": "ftp://x", "topic": "t"}, "url must be an http"),
        ({"url": "http://x", "topic": "t", "selector": "$..x"}, "selector"),
        ({"url": "http://x", "topic": "t", "interval": 0}, "'interval' must be > 0: 0"),
        ({"url": "http://x", "topic": "t", "interval": float("nan")}, "'interval' must be a finite number: nan"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=message):
            structure_strict(table, HttpJsonOptions, file="u.toml", root="sources.p")


async def test_unchanged_document_is_a_304_and_publishes_nothing_then_only_changes_go_out(nursery):
    server = JsonServer(feed(ITEMS))
    async with serve_asgi(server) as url:
        source = make(url + "/feed")
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await poll_until(source, 3)
        assert pub.is_ready
        assert len(pub.updates) == 1 and {e["id"] for e in pub.updates[0][1]} == {f"k{i}" for i in range(5)}
        assert pub.state["parking"]["k2"] == {"key": "k2", "free": 2, "id": "k2"}
        assert server.statuses[:3] == [200, 304, 304]
        assert server.requests[1]["if-none-match"] == server.etag

        changed = [dict(e) for e in ITEMS[:4]]
        changed[1]["free"] = 99
        server.set(feed(changed))
        n = source.polls
        await poll_until(source, n + 2)
        assert len(pub.updates) == 2
        assert pub.updates[1] == ("parking", [{"key": "k1", "free": 99, "id": "k1"}], ["k4"])
        nursery.cancel_scope.cancel()


async def test_last_modified_alone_makes_if_modified_since(nursery):
    server = JsonServer(feed(ITEMS), validators=("last-modified",))
    async with serve_asgi(server) as url:
        source = make(url + "/feed")
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await poll_until(source, 2)
        assert server.requests[1]["if-modified-since"] == server.last_modified
        assert "if-none-match" not in server.requests[1]
        assert server.statuses[1] == 304 and len(pub.updates) == 1
        nursery.cancel_scope.cancel()


async def test_errors_timeouts_and_bad_bodies_are_retried_and_recover(nursery, caplog):
    caplog.set_level(logging.INFO)
    server = JsonServer(feed(ITEMS))
    server.fail = [500, 503, 503]
    async with serve_asgi(server) as url:
        source = make(url + "/feed", timeout=0.2, retry_min_backoff=0.02, retry_max_backoff=0.05)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await poll_until(source, 1)
        assert server.statuses[:4] == [500, 503, 503, 200] and len(pub.state["parking"]) == 5
        # logged once per change of state: 500, then 503 (once for two), then recovered
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert sum("HTTP 500" in w for w in warnings) == 1 and sum("HTTP 503" in w for w in warnings) == 1
        assert any("recovered after 3 failed attempt(s)" in r.getMessage() for r in caplog.records)

        server.delay = 0.5  # longer than timeout
        n = len(server.requests)
        with trio.fail_after(5):
            while len(server.requests) < n + 2:
                await trio.sleep(0.01)
        assert any("timed out" in r.getMessage() for r in caplog.records)
        server.delay = 0
        server.raw = b"{not json"
        server.set(feed(ITEMS[:1]))
        with trio.fail_after(5):
            while not any("not JSON" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
        assert len(pub.state["parking"]) == 5  # the last good state is kept
        server.raw = None
        n = source.polls
        await poll_until(source, n + 1)
        assert set(pub.state["parking"]) == {"k0"}
        nursery.cancel_scope.cancel()


async def test_items_without_id_are_skipped_and_counted(nursery, caplog):
    server = JsonServer(feed([*ITEMS[:2], {"nokey": 1}, "text", {"key": None}]))
    async with serve_asgi(server) as url:
        source = make(url + "/feed")
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await poll_until(source, 1)
        assert set(pub.state["parking"]) == {"k0", "k1"} and source.skipped == 3
        assert any("skipped 3 item(s)" in r.getMessage() for r in caplog.records)
        nursery.cancel_scope.cancel()


async def test_in_a_running_daemon_clients_get_the_feed():
    server = JsonServer(feed(ITEMS))
    async with serve_asgi(server) as url:
        table = {"plugin": "http-json", "url": url + "/feed", "topic": "parking", "selector": "$.data.items", "id_field": "key", "interval": 0.05}
        async with run_daemon({"sources": {"lots": table}}) as daemon:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}") as api:
                with trio.fail_after(5):
                    while (await api.get("/readyz")).status_code != 200:
                        await trio.sleep(0.02)
            async with open_websocket_url(f"ws://127.0.0.1:{daemon.ws_port}/") as ws:
                assert "parking" in json.loads(await ws.get_message())["topics"]
                snapshot = json.loads(await ws.get_message())
                assert {e["id"] for e in snapshot["data"]["parking"]} == {f"k{i}" for i in range(5)}
                server.set(feed([{"key": "k0", "free": 7}]))
                update = json.loads(await ws.get_message())
                assert update["type"] == "UPDATE" and update["data"] == [{"key": "k0", "free": 7, "id": "k0"}]
                assert sorted(update["removed"]) == ["k1", "k2", "k3", "k4"]
