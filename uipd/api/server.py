"""Serving the API app with hypercorn's HTTP/1.1 protocol, on the daemon's own accept loop.

hypercorn's ``serve`` accepts with ``trio.serve_listeners``: when descriptors run out it logs a
traceback every 100 ms and API connections hang until they free up.  So this module assembles
what ``hypercorn.trio.run.worker_serve`` does (a ``TCPServer`` per connection sharing one
``WorkerContext``; no lifespan: the app has nothing to start) on :mod:`uipd.server.accept`,
which backs off and logs one line per episode.  It binds with the WebSocket listener's backlog
(hypercorn's is 100: a burst of more connections than that had SYNs dropped, and the clients,
the health checker among them, waited a whole second for their retransmission).  These are
hypercorn internals: hypercorn is pinned (pyproject.toml), and tests/api/test_server.py fails if
the names used here change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from uipd.api.app import ApiApp
from uipd.server.accept import AcceptEpisode, serve_listeners
from uipd.systemd import listener_from

BACKLOG = 4096
"""The listen backlog (as the WebSocket listener's)."""


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(request_timeout: float) -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("uipd.api.http")
    config.set_statsd_logger_class(StatsdLogger)  # what worker_serve sets: config.log is made from it
    # hypercorn's idle timer runs from the connection's start (or the previous answer) until a
    # request head is complete, whatever trickles in meanwhile: it is the head's deadline. Its
    # read_timeout is not used: it bounds only the gap between reads, and would also cut a client
    # waiting quietly for a slow answer. (h11 bounds the head's size: 16 KiB.)
    config.keep_alive_timeout = request_timeout
    config.graceful_timeout = 1.0
    return config


async def serve_api(
    app: ApiApp,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    fd: int | None = None,
    request_timeout: float = 5.0,
    backoff: Callable[[], tuple[float, float]] = lambda: (0.05, 1.0),
    episode: AcceptEpisode | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the HTTP API until ``shutdown_trigger`` returns; started() with the bound addresses.
    ``fd``: serve on this inherited listening socket (systemd socket activation) instead of binding.
    ``request_timeout``: how long a connection may take to send a request head (the app bounds the
    body with the same figure).  ``backoff`` and ``episode``: the accept loop's, when accepting
    fails for lack of descriptors (see :func:`uipd.server.accept.serve_listeners`)."""
    config = hypercorn_config(request_timeout)
    if fd is None:
        listeners = await trio.open_tcp_listeners(port, host=host or None, backlog=BACKLOG)
    else:
        listeners = [listener_from(fd)]
    binds = [f"http://{_bind(*l.socket.getsockname()[:2])}" for l in listeners]
    context = WorkerContext(None)
    asgi = ASGIWrapper(app)  # type: ignore[arg-type]
    state = ConnectionState({})

    async def serve_connection(stream: Any) -> None:  # TCPServer.run ends quietly on OSError and stream errors
        await TCPServer(asgi, config, context, state, stream).run()

    async with trio.open_nursery() as connections:
        task_status.started(binds)
        try:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(partial(
                    serve_listeners, serve_connection, listeners, handler_nursery=connections, backoff=backoff, episode=episode,
                    task_name="uipd api connection",
                ))
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
        finally:
            # As worker_serve: idle keep-alive connections close at once, requests under way get
            # graceful_timeout.
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
