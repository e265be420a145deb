"""Shared fixtures: a real daemon in the test's nursery on free ports, real clients over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from tests.wsclient import RawClient
from uipd.config import from_dict
from uipd.daemon import Daemon
from uipd.sources.registry import PluginRegistry

DEFAULT_TOPICS = ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@asynccontextmanager
async def running_daemon(raw: dict[str, Any] | None = None, *, plugins: tuple[tuple[str, object], ...] = ()) -> AsyncIterator[Daemon]:
    base = {
        "server": {"host": "127.0.0.1", "port": 0, "topics": DEFAULT_TOPICS, "drain_timeout": 2.0},
        "api": {"port": 0},
    }
    config = from_dict(_merge(base, raw or {}), file="test.toml")
    daemon = Daemon(config, PluginRegistry.discover(plugins))
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_shutdown()


@pytest.fixture
def daemon_factory() -> Callable[..., Any]:
    return running_daemon


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    async with running_daemon() as d:
        yield d


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}", timeout=10) as client:
        yield client


async def connect(daemon: Daemon, path: str = "/", **kw: Any) -> RawClient:
    """Connect and consume the connection message and SNAPSHOT."""
    client = await RawClient.connect(daemon.ws_port, path, **kw)
    first = await client.recv_json()
    assert first["type"] == "connection"
    second = await client.recv_json()
    assert second["type"] == "SNAPSHOT"
    return client


def api_client(daemon: Daemon, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}", timeout=10, **kw)
