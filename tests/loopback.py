"""Serving a test's own TCP endpoint (the proxies of tests/cluster and tests/client) on a free
loopback port, in the test's trio loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def serve_loopback(
    handler: Callable[[trio.SocketStream], Awaitable[None]], on_port: Callable[[int], None], task_status: trio.TaskStatus[None]
) -> None:
    """Serve ``handler`` on a free port of 127.0.0.1: ``on_port`` learns the port before
    ``task_status.started()``, so a test that started this can connect at once."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    on_port(listeners[0].socket.getsockname()[1])
    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
