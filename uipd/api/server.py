"""Serving the API app with hypercorn's HTTP/1.1 protocol, on the daemon's own accept loop.

hypercorn's ``serve`` accepts with ``trio.serve_listeners``: when descriptors run out it logs a
traceback every 100 ms and API connections hang until they free up.  So this module assembles
what ``hypercorn.trio.run.worker_serve`` does (a ``TCPServer`` per connection sharing one
``WorkerContext``; no lifespan: the app has nothing to start) on :mod:`uipd.server.accept`,
which backs off and logs one line per episode.  It binds with the WebSocket listener's backlog
(hypercorn's is 100: a burst of more connections than that had SYNs dropped, and the clients,
the health checker among them, waited a whole second for their retransmission).  Each
connection is hypercorn's ``TCPServer`` with two changes (:class:`ApiConnection`) for clients that
go away or stall.  These are hypercorn internals: hypercorn is pinned (pyproject.toml), and
tests/api/test_server.py fails if the names used here change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from uipd.api.app import ApiApp
from uipd.runtime.systemd import listener_from
from uipd.server.accept import AcceptEpisode, serve_listeners
from uipd.server.clock import spread

BACKLOG = 4096
"""The listen backlog (as the WebSocket listener's)."""


class IdleTimer:
    """hypercorn's ``TrioSingleTask`` for the idle timer, without its scheduler rounds: that one
    starts the timer with ``nursery.start`` and stops it under a lock (four rounds per request
    through a shared loop: about a quarter of a connection's cost under py-spy).  Here the timer's cancel scope is
    made before its task starts (``start_soon``) and nothing awaits, so there is no race to lock
    against: a scope cancelled before its task entered it cancels the task at its first wait."""

    __slots__ = ("_scope", "_ended")

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None
        self._ended = False

    def end(self) -> None:
        """The peer closed: no request can come any more, so no timer is started again (the
        answer to the last request, finishing in the app's task, restarts it otherwise)."""
        self._ended = True
        if self._scope is not None:
            self._scope.cancel()

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        await self.stop()
        if self._ended:
            return
        self._scope = trio.CancelScope()
        task_group._nursery.start_soon(_timer, self._scope, action)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


async def _timer(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class ApiConnection(TCPServer):
    """hypercorn's connection, but a client that goes away costs only its close.

    hypercorn hands the end of the stream to h11 like data: a client gone before its request was
    complete (a slowloris client's exit closes hundreds at once) was sent a 400 it could not read,
    through the send lock and a shielded write; and the idle timer (the head's deadline) was left
    running, so the connection's task, its timer and the peer's state lived on until that deadline
    before the same close was done again.  Here the end of the stream stops the timer and closes
    the request under way (the app sees ``http.disconnect``): nothing is written to a peer that
    closed.  That timer's deadline is also spread (:func:`uipd.server.clock.spread`) as the
    WebSocket handshake's is, so heads trickled in on connections opened together are not all cut
    in one scheduler round.  And a closed connection is freed at once: hypercorn's protocol refers
    back to its connection (its ``send`` is ``protocol_send``), a cycle that left ~26 objects per
    connection to the cyclic collector; promoted while the connections lived, they were freed by a
    collection of the oldest generation, which came at the slowloris attack's end and took 100 ms."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.timer = IdleTimer()
        self.idle_task = self.timer  # type: ignore[assignment]

    async def run(self) -> None:
        try:
            await super().run()
        finally:  # every task of the connection (its app's among them) has ended
            vars(self).pop("protocol", None)

    async def _read_data(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):  # closed by the idle timer, reset
                break
            if not data:
                break
            await self.protocol.handle(RawData(bytes(data)))
        self.timer.end()
        await self.protocol.handle(Closed())

    async def _idle_timeout(self) -> None:
        with trio.move_on_after(spread(self.config.keep_alive_timeout)):
            await self.context.terminated.wait()
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(request_timeout: float) -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("uipd.api.http")
    config.set_statsd_logger_class(StatsdLogger)  # what worker_serve sets: config.log is made from it
    # hypercorn's idle timer runs from the connection's start (or the previous answer) until a
    # request head is complete, whatever trickles in meanwhile: it is the head's deadline. Its
    # read_timeout is not used (ApiConnection's reads do not apply it): it bounds only the gap
    # between reads, and would also cut a client waiting quietly for a slow answer. (h11 bounds the head's size: 16 KiB.)
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
        await ApiConnection(asgi, config, context, state, stream).run()

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
