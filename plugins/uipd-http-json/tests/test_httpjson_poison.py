"""A document holding items uipd refuses: those are left out and reported, the others published;
the source goes on polling (a raise would restart it in a loop and the good items never arrive)."""

from __future__ import annotations

import json
import logging

import trio
from httpjson_support import JsonServer

from uipd.testing import FakePublisher, serve_asgi
from uipd_http_json.options import HttpJsonOptions
from uipd_http_json.plugin import create


def make(url):
    return create(HttpJsonOptions(url=url, topic="parking", selector="$.items[*]", id_field="key", interval=0.02, retry_min_backoff=0.01, retry_max_backoff=0.02))


async def poll_until(source, n):
    with trio.fail_after(5):
        while source.polls < n:
            await trio.sleep(0.005)


def body(*items: str) -> bytes:
    return ('{"items":[' + ",".join(items) + "]}").encode()


async def test_items_uipd_refuses_are_left_out_and_the_others_published(nursery, caplog):
    caplog.set_level(logging.WARNING)
    server = JsonServer({})
    deep = "[" * 300 + "]" * 300
    server.raw = body('{"key":"a","free":1}', '{"key":"nan","free":NaN}', '{"key":"b","free":2}', f'{{"key":"huge","free":{2**70}}}', f'{{"key":"deep","v":{deep}}}')
    async with serve_asgi(server) as url:
        source = make(url)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await poll_until(source, 1)
        assert sorted(pub.state["parking"]) == ["a", "b"] and source.refused == 3
        (line,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert "left out 3 item(s) at $.items[*] that uipd refuses, published the others" in line and "entity 'nan'" in line
        # an item published before that turns bad keeps its last good version (it is still listed)
        server.raw = body('{"key":"a","free":Infinity}', '{"key":"b","free":3}')
        server.set({"v": 2})  # a new ETag
        n = source.polls
        await poll_until(source, n + 2)
        assert pub.state["parking"] == {"a": {"key": "a", "free": 1, "id": "a"}, "b": {"key": "b", "free": 3, "id": "b"}}
        # a document nested past the decoder cannot be read at all: a failed poll, retried, no crash
        server.raw = b'{"items":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        server.set({"v": 3})
        with trio.fail_after(5):
            while not any("not JSON (nested too deep); retrying" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.005)
        server.raw = body('{"key":"c","free":0}')
        server.set({"v": 4})
        with trio.fail_after(5):
            while "c" not in pub.state["parking"]:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
