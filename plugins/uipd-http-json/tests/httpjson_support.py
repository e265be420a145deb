"""Test helpers for the http-json plugin (module name unique across plugins: pytest puts every
plugin's tests/ on sys.path): a fake Publisher, a real local HTTP server serving a JSON document
with ETag/Last-Modified, and uipd run in-process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from uipd.config import from_dict
from uipd.daemon import Daemon
from uipd.sources.registry import PluginRegistry


class FakePublisher:
    """The uipd Publisher protocol in memory; records every publication."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.state: dict[str, dict[str, Mapping[str, Any]]] = {t: {} for t in topics}
        self.updates: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        self.alerts: list[tuple[str, Any]] = []
        self.is_ready = False

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int:
        if topic not in self.state:
            raise ValueError(f"undeclared topic {topic!r}")
        entities, removed = [dict(e) for e in entities], [str(r) for r in removed]
        for e in entities:
            self.state[topic][str(e["id"])] = e
        for r in removed:
            self.state[topic].pop(r, None)
        self.updates.append((topic, entities, removed))
        return len(self.updates)

    def alert(self, topic: str, data: Any) -> int:
        self.alerts.append((topic, data))
        return len(self.updates) + len(self.alerts)

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        new = {str(e["id"]): e for e in entities}
        changed = [e for k, e in new.items() if self.state[topic].get(k) != e]
        removed = [k for k in self.state[topic] if k not in new]
        return self.update(topic, changed, removed) if changed or removed else None

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        return self.state[topic]

    def ready(self) -> None:
        self.is_ready = True


class JsonServer:
    """An ASGI app serving one JSON document at any path, honouring conditional requests.

    ``validators`` picks what it sends: "etag", "last-modified" or both.  ``fail`` holds
    statuses to answer the next requests with; ``delay`` holds the answer back (for timeouts).
    """

    def __init__(self, document: Any, validators: tuple[str, ...] = ("etag", "last-modified")) -> None:
        self.validators = validators
        self.requests: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.fail: list[int] = []
        self.delay = 0.0
        self.raw: bytes | None = None
        self.version = 0
        self.set(document)

    def set(self, document: Any) -> None:
        self.body = json.dumps(document).encode()
        self.version += 1
        # one distinct HTTP date per version, so If-Modified-Since works without waiting a second
        self.last_modified = f"Tue, 09 Dec 2025 10:{self.version // 60:02d}:{self.version % 60:02d} GMT"

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(headers)
        if self.delay:
            await trio.sleep(self.delay)
        status, body, out = 200, self.raw if self.raw is not None else self.body, [(b"content-type", b"application/json")]
        if self.fail:
            status, body = self.fail.pop(0), b'{"error":"broken on purpose"}'
        elif headers.get("if-none-match") == self.etag and "etag" in self.validators:
            status, body = 304, b""
        elif headers.get("if-modified-since") == self.last_modified and "last-modified" in self.validators and "if-none-match" not in headers:
            status, body = 304, b""
        if "etag" in self.validators:
            out.append((b"etag", self.etag.encode()))
        if "last-modified" in self.validators:
            out.append((b"last-modified", self.last_modified.encode()))
        self.statuses.append(status)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Any, send: Any) -> None:
    """Answer hypercorn's ASGI lifespan messages (nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with hypercorn on 127.0.0.1, a free port; yields the base URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        (bound,) = await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield bound
        finally:
            stop.set()


@asynccontextmanager
async def running_daemon(sources: dict[str, Any]) -> AsyncIterator[Daemon]:
    """uipd in this process on free ports with ``sources`` (the idea of uipd's tests/conftest.py)."""
    raw = {
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout": 2.0},
        "api": {"port": 0, "dashboard": False},
        "sources": sources,
    }
    daemon = Daemon(from_dict(raw, file="test.toml"), PluginRegistry.discover())
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_shutdown()
