"""Serving the API app with hypercorn's trio worker, inside the daemon's nursery."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from uipd.api.app import ApiApp


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_api(
    app: ApiApp,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    fd: int | None = None,
    request_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the HTTP API until ``shutdown_trigger`` returns; started() with the bound addresses.
    ``fd``: serve on this inherited listening socket (systemd socket activation) instead of binding.
    ``request_timeout``: how long a connection may take to send a request head (the app bounds the
    body with the same figure)."""
    config = HypercornConfig()
    config.bind = [_bind(host, port)] if fd is None else [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("uipd.api.http")
    # hypercorn's idle timer runs from the connection's start (or the previous answer) until a
    # request head is complete, whatever trickles in meanwhile: it is the head's deadline. Its
    # read_timeout is not used: it bounds only the gap between reads, and would also cut a client
    # waiting quietly for a slow answer. (h11 bounds the head's size: 16 KiB.)
    config.keep_alive_timeout = request_timeout
    config.graceful_timeout = 1.0
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]
