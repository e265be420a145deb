"""Shared fixtures: a real daemon in the test's nursery on free ports, real clients over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from tests.wsclient import RawClient
from uipd.runtime.daemon import Daemon
from uipd.testing import run_daemon

DEFAULT_TOPICS = ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]


def running_daemon(raw: dict[str, Any] | None = None, *, plugins: tuple[tuple[str, object], ...] = ()) -> AbstractAsyncContextManager[Daemon]:
    """uipd.testing.run_daemon, with the six default topics unless ``raw`` names its own."""
    raw = dict(raw or {})
    raw["server"] = {"topics": DEFAULT_TOPICS, **raw.get("server", {})}
    return run_daemon(raw, plugins=plugins)


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
