"""Fixtures of the Redis broker's tests: a key prefix of the test's own (its keys deleted after
it), and a FreezableProxy in front of the shared Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import coredis
import pytest

from tests.cluster.proxy import FreezableProxy

REDIS_URL = "redis://127.0.0.1:6379/0"


async def drop_keys(prefix: str) -> None:
    """Delete every key under ``prefix`` (what Redis losing a cluster's data looks like, too)."""
    async with coredis.Redis.from_url(REDIS_URL) as r:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(keys)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    yield prefix
    await drop_keys(prefix)


@pytest.fixture
async def proxy(nursery) -> FreezableProxy:
    proxy = FreezableProxy(6379)
    await nursery.start(proxy.run)
    return proxy
