"""Test helpers for the ngsi-ld plugin (module name unique across plugins: pytest puts every
plugin's tests/ on sys.path): a fake Publisher, serving an ASGI app on a free port, uipd in-process."""

from __future__ import annotations

import socket
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
async def running_daemon(sources: dict[str, Any], api: dict[str, Any] | None = None) -> AsyncIterator[Daemon]:
    """uipd in this process on free ports with ``sources`` (the idea of uipd's tests/conftest.py)."""
    raw = {
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout": 2.0},
        "api": {"port": 0, "dashboard": False, **(api or {})},
        "sources": sources,
    }
    daemon = Daemon(from_dict(raw, file="test.toml"), PluginRegistry.discover())
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_shutdown()


def free_port() -> int:
    """A port free right now (for a daemon whose own config must name its API port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
