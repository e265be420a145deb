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
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the HTTP API until ``shutdown_trigger`` returns; started() with the bound addresses.
    ``fd``: serve on this inherited listening socket (systemd socket activation) instead of binding."""
    config = HypercornConfig()
    config.bind = [_bind(host, port)] if fd is None else [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("uipd.api.http")
    config.keep_alive_timeout = 30
    config.graceful_timeout = 1.0
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]
