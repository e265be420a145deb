"""The accept loop of both listeners (WebSocket, HTTP API): takes each TCP connection and starts its handler.

It replaces ``trio.serve_listeners`` for one reason: when the process runs out of descriptors
(EMFILE, ENFILE) or of kernel memory (ENOBUFS, ENOMEM), trio logs a full traceback every 100 ms
for as long as that lasts, and retries at that pace.  Here one episode is one warning when it
begins and one line when accepting works again, and the retries back off (``[server]
accept_backoff`` doubling up to ``accept_backoff_max``): connections wait in the listen backlog
meanwhile, and are taken as soon as descriptors free up (at most one backoff cap later).  The
waits are uipd's one :class:`~uipd.core.backoff.Backoff`.  A plain TCP listener is also
accepted from in batches (:class:`BatchAccept`): a connection storm costs one task switch per
batch, not one per connection.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from attrs import define

from uipd.core.backoff import Backoff

log = logging.getLogger(__name__)

CAPACITY_ERRORS = {
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "out of file descriptors (system-wide)",
    errno.ENOBUFS: "out of socket buffers",
    errno.ENOMEM: "out of memory",
}
"""accept() failures that say the process or the system is full, not that the listener broke."""


@define
class AcceptEpisode:
    """Whether the listeners are backing off, shared by all of them: one log line per episode."""

    since: float | None = None
    """When the current episode began (trio clock); None: accepting normally."""
    failures: int = 0
    waits: Backoff | None = None
    """The current episode's waits (made from the config when it begins)."""

    def failed(self, exc: OSError, backoff: float, backoff_max: float, clock: float) -> float:
        """An accept failed for lack of resources: how long to wait before the next try.  An
        episode's waits are those configured when it began (a reload applies from the next one)."""
        if self.since is None or self.waits is None:
            self.since, self.waits = clock, Backoff(backoff, backoff_max)
            log.warning(
                "%s: accept() failed with %s (%s); backing off (%.2f s doubling up to %.1f s) until connections can be taken again",
                CAPACITY_ERRORS[exc.errno], errno.errorcode.get(exc.errno, exc.errno), os.strerror(exc.errno), backoff, backoff_max,
            )
        self.failures += 1
        return self.waits.next()

    def succeeded(self, clock: float) -> None:
        if self.since is not None:
            log.warning("accepting connections again after %.1f s (%d failed accepts)", clock - self.since, self.failures)
            self.since, self.failures, self.waits = None, 0, None


async def serve_listeners(
    handler: Callable[[trio.abc.Stream], Awaitable[None]],
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    handler_nursery: trio.Nursery,
    backoff: Callable[[], tuple[float, float]],
    episode: AcceptEpisode | None = None,
    task_name: str = "uipd client",
) -> None:
    """Accept on every listener until cancelled; each connection's ``handler`` (which must never
    raise) runs in ``handler_nursery``.  ``backoff`` gives (first delay, cap) when an episode
    begins: read then, so a reload applies from the next episode.  ``episode``: shared with other listeners
    (the WebSocket and the API ones run out of descriptors together: one episode, one line);
    ``task_name``: each handler task's name."""
    episode = AcceptEpisode() if episode is None else episode
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_from, listener, handler, handler_nursery, episode, backoff, task_name)


async def _accept_from(
    listener: trio.abc.Listener[Any],
    handler: Callable[[trio.abc.Stream], Awaitable[None]],
    handler_nursery: trio.Nursery,
    episode: AcceptEpisode,
    backoff: Callable[[], tuple[float, float]],
    task_name: str,
) -> None:
    async with listener:
        batch = BatchAccept(listener) if isinstance(listener, trio.SocketListener) else None
        try:
            while True:
                try:
                    streams = [await listener.accept()] if batch is None else await batch.accept()
                except OSError as exc:
                    if exc.errno not in CAPACITY_ERRORS:
                        raise
                    await trio.sleep(episode.failed(exc, *backoff(), trio.current_time()))
                    continue
                if episode.since is not None:
                    episode.succeeded(trio.current_time())
                for stream in streams:
                    # A constant name: trio otherwise formats one per task (a string kept per connection).
                    handler_nursery.start_soon(handler, stream, name=task_name)
        finally:
            if batch is not None:
                batch.detach()


ACCEPT_BATCH = 64
"""Connections taken from the backlog per wake-up at most, before the loop yields: a storm is
accepted in batches (one scheduler round each, not one per connection), and a long one still
lets the connections already taken, and everyone else, run between batches."""

_IGNORABLE_ACCEPT_ERRORS = frozenset(
    getattr(errno, name) for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP",
        "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    ) if hasattr(errno, name)
)
"""accept() failures that concern only the connection being taken (it was reset, a firewall
denied it): skipped, as ``trio.SocketListener.accept`` skips them (the same list)."""


class BatchAccept:
    """Accepts on a plain TCP listener until the backlog is empty, then waits once.

    ``trio.SocketListener.accept`` takes one connection per call and yields to the scheduler
    after each (a task switch per connection of a storm).  This takes what the backlog holds with
    non-blocking accept() calls on the listener's descriptor (a stdlib socket object over it,
    detached at the end, so the listener still owns and closes it), each wrapped in the same
    ``trio.SocketStream``."""

    __slots__ = ("_sock",)

    def __init__(self, listener: trio.SocketListener) -> None:
        self._sock = socket.socket(fileno=listener.socket.fileno())
        self._sock.setblocking(False)

    async def accept(self) -> list[trio.SocketStream]:
        """The connections waiting now (at least one, at most ACCEPT_BATCH); raises the OSError
        of a failed accept() when it took none before it (it comes again on the next call)."""
        while True:
            streams = self._take()
            if streams:
                await trio.lowlevel.cancel_shielded_checkpoint()  # as trio's accept: taken sockets are never dropped
                return streams
            await trio.lowlevel.wait_readable(self._sock)

    def _take(self) -> list[trio.SocketStream]:
        streams: list[trio.SocketStream] = []
        while len(streams) < ACCEPT_BATCH:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _IGNORABLE_ACCEPT_ERRORS:
                    continue
                if streams:
                    break
                if exc.errno == errno.EBADF:  # the listener was closed (as trio reports it)
                    raise trio.ClosedResourceError from None
                raise
            streams.append(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
        return streams

    def detach(self) -> None:
        self._sock.detach()
