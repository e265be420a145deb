"""One client connection, from the accepted TCP stream to its close.

An open connection has one task: its receive loop, which never awaits anything but the next bytes
from the peer (every reply is queued by the core).  A writer task exists only while frames wait
for a full socket, or a close or resync is due.  Both run in the connection's own nursery, and
whatever goes wrong inside a connection ends that connection only.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import trio
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import ProtocolError

from uipd.auth import Identity
from uipd.core.admission import Refusal
from uipd.core.hub import Hub, Session
from uipd.server.clock import now
from uipd.server.flusher import Flusher
from uipd.server.handshake import open_handshake
from uipd.server.transport import TransportClosed, WebSocketTransport, WriteGate

if TYPE_CHECKING:
    from uipd.config import ServerConfig

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009

_client_ids = random.Random()  # seeded from os.urandom; ids name clients, they grant nothing
"""Client ids: a system call per connection (``secrets``) showed in the profile of a connection storm."""

# How peers break connections: a reset, a protocol error, a close race.
_EXPECTED = (trio.BrokenResourceError, trio.ClosedResourceError, TransportClosed, ProtocolError, OSError)


class ClientConnection:
    """The shell of one session: moves its frames and owns its lifetime.

    An idle connection has no writer task.  Frames queued by the core make the connection due
    for the flusher's next pass (:mod:`uipd.server.flusher`), which writes them all with one
    system call (``flush``); a writer task is started only when frames must wait (the socket is
    full, a write is under way) or a close or resync is due, and it ends when the queue is empty
    again.
    """

    __slots__ = (
        "hub", "transport", "nursery", "flusher", "close_timeout", "max_message_bytes", "remote", "session",
        "_writing", "_due", "_write_scope",
    )

    def __init__(
        self,
        hub: Hub,
        transport: WebSocketTransport,
        nursery: trio.Nursery,
        flusher: Flusher,
        close_timeout: float,
        remote: str = "?",
        *,
        max_message_bytes: int = 64 * 1024,
        allowed_topics: frozenset[str] | None = None,
        expires_in: float | None = None,
    ) -> None:
        self.hub = hub
        self.remote = remote
        """The client's address (for per-address limits and logs)."""
        self.transport = transport
        self.nursery = nursery
        """The connection's nursery: the receive loop is its body and the writer runs in it;
        cancelling its scope ends the connection (it gets a deadline once our close frame is out:
        the peer has close_timeout to answer)."""
        self.flusher = flusher
        self.close_timeout = close_timeout
        self.max_message_bytes = max_message_bytes
        self._writing = False
        self._due = False
        """Waiting for the flusher's next pass."""
        self._write_scope: trio.CancelScope | None = None
        self.session: Session = hub.connect(
            "%016x" % _client_ids.getrandbits(64), now(), self._wake, allowed_topics=allowed_topics, expires_in=expires_in
        )

    def _wake(self) -> None:
        """Called by the core, synchronously, when frames were queued or a close or resync is due."""
        if not self._writing:
            if not self._due:
                self._due = True
                self.flusher.schedule(self)
            return
        if self._write_scope is not None and self.session.outbound.closing is not None:
            # A client being closed gets close_timeout to take the frame in flight, so that its
            # close frame can follow; past that its TCP connection is dropped.
            self._write_scope.deadline = min(self._write_scope.deadline, trio.current_time() + self.close_timeout)

    def flush(self) -> None:
        """The flusher's pass: write what is queued at once if the socket can take it, else
        leave it to a writer task."""
        self._due = False
        if self._writing:
            return  # the writer takes it
        queue = self.session.outbound
        if queue.closing is None and not queue.resync_pending and self.transport.direct_write_possible:
            frames = queue.take()
            if frames:
                gate = self.transport.gate
                gate.write_now(frames)
                flusher = self.flusher
                flusher.writes += 1
                flusher.frames_written += len(frames)
                if not gate.needs_flush:
                    queue.written()
                    return
        elif not len(queue) and queue.closing is None and not queue.resync_pending:
            return
        self._start_writer()  # the rest of a partial write, a close, a resync, or no direct path

    def _start_writer(self) -> None:
        self.flusher.writer_starts += 1
        self._writing = True
        try:
            self.nursery.start_soon(self._write_loop)
        except RuntimeError:  # the connection is over (its nursery is closed)
            self._writing = False

    def abort(self) -> None:
        self.nursery.cancel_scope.cancel()

    def finish(self) -> None:
        """The receive side is over (the peer's close, its EOF, the close handshake done).  A
        close frame still due, or still being written, is given close_timeout to go out (the
        peer's close may have crossed ours, or it half-closed right after its close frame);
        anything else the writer was doing is dropped."""
        transport = self.transport
        if self.session.outbound.closing is None or transport.close_sent or transport.gate.broken:
            self.abort()
            return
        scope = self.nursery.cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)
        if not self._writing:
            self._start_writer()

    async def run(self) -> None:
        """The receive loop, until the close handshake is done or the connection breaks."""
        session, hub, transport = self.session, self.hub, self.transport
        outbound = session.outbound
        fragments: list[str] = []
        fragment_bytes = 0
        data = transport.take_trailing_data()
        try:
            while not transport.closed:
                if not data:
                    try:
                        data = await transport.gate.receive_some()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not data:
                        return  # the peer closed TCP
                events, data = transport.feed(data), b""
                for event in events:
                    if isinstance(event, TextMessage):
                        if outbound.closing is not None:
                            continue  # a closing connection reads only to reach the peer's close
                        if event.message_finished and not fragments:
                            text = event.data
                            # Characters <= UTF-8 bytes <= 4 x characters: encode only when it matters.
                            if len(text) * 4 > self.max_message_bytes and len(text.encode()) > self.max_message_bytes:
                                self._too_big()
                                continue
                            hub.receive(session, text, now())
                            continue
                        fragments.append(event.data)
                        fragment_bytes += len(event.data.encode())
                        if fragment_bytes > self.max_message_bytes:
                            fragments.clear()
                            self._too_big()
                        elif event.message_finished:
                            text = "".join(fragments)
                            fragments.clear()
                            fragment_bytes = 0
                            hub.receive(session, text, now())
                    elif isinstance(event, BytesMessage):
                        # At its first bytes: a binary message is never read to its end.
                        outbound.request_close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", flush=True)
                    elif isinstance(event, Ping):
                        if transport.open:
                            hub.reply(session, transport.pong_frame(event.payload))
                    elif isinstance(event, Pong):
                        hub.pong(session, time.monotonic())
                    elif isinstance(event, CloseConnection):
                        if transport.violation:
                            # A frame broke RFC 6455: say why (1002/1007), parse nothing more.
                            outbound.request_close(event.code, event.reason or "protocol error", flush=False)
                            await self._discard_until_closed()
                            return
                        # The peer's close: answered by the writer, after a frame in flight.
                        outbound.request_close(event.code, event.reason or "", flush=False)
        finally:
            hub.disconnect(session)

    def _too_big(self) -> None:
        self.session.outbound.request_close(CLOSE_MESSAGE_TOO_BIG, "message too big", flush=False)

    async def _discard_until_closed(self) -> None:
        """Read and drop what the peer still sends until it closes (or our close timed out):
        closing a socket with unread data would reset it and lose our close frame."""
        while True:
            if not await self.transport.gate.receive_some():
                return

    async def _write_loop(self) -> None:
        queue = self.session.outbound
        transport = self.transport
        try:
            while True:
                frames = queue.take()
                if frames or transport.gate.needs_flush:
                    # Once a close is due, every write must end within close_timeout: a client
                    # that stopped reading is dropped then, whatever the close.
                    deadline = math.inf if queue.closing is None else trio.current_time() + self.close_timeout
                    with trio.CancelScope(deadline=deadline) as self._write_scope:
                        try:
                            await transport.write(b"".join(frames))
                        except TransportClosed:
                            self.abort()
                            return
                    scope, self._write_scope = self._write_scope, None
                    if scope.cancelled_caught:
                        # A partial frame went out: no close frame can follow it, drop the connection.
                        self.abort()
                        return
                    queue.written()
                    continue
                if queue.closing is not None:
                    await self._close(queue.closing.code, queue.closing.reason)
                    return
                if self.hub.take_resync(self.session, now()):
                    continue
                return  # nothing left to write: no task while idle
        finally:
            self._writing = False

    async def _close(self, code: int, reason: str) -> None:
        """Send our close frame (or answer the peer's), then give the peer close_timeout to
        answer before the TCP connection is dropped."""
        transport = self.transport
        with trio.move_on_after(self.close_timeout) as scope:
            try:
                await transport.close(code, reason)
                if transport.violation:
                    # The peer's close frame could not be parsed any more: end our side of the
                    # TCP connection instead, so a client that got our close frame closes at once.
                    await transport.gate.send_eof()
            except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                scope.cancel()
        if scope.cancelled_caught or transport.closed:
            self.abort()  # done (or broken): the server closes the TCP connection first
            return
        scope = self.nursery.cancel_scope  # the receive loop waits for the peer's close until then
        scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)


class ConnectionHost(Protocol):
    """What a connection needs of the daemon that accepted it."""

    hub: Hub
    flusher: Flusher

    @property
    def server_config(self) -> ServerConfig:
        """Read at each accept: a reloaded config applies to new connections."""

    def admit(self, target: str, headers: Mapping[str, str], ip: str) -> Refusal | Identity:
        """Decide a handshake from its target (path and query), headers (lower-case) and the
        client's address."""

    def register(self, connection: ClientConnection) -> Callable[[], None]:
        """Note an open connection; returns what undoes it."""

    def count_accept(self) -> None:
        """A TCP connection was accepted (the watchdog's probe watches this)."""


def remote_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None) or getattr(getattr(stream, "transport_stream", None), "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "?"
    except OSError:
        return "?"


async def serve_stream(stream: trio.abc.Stream, host: ConnectionHost) -> None:
    """Own one accepted TCP stream: handshake, run the client, close; never raise.

    The daemon hands this (with ``functools.partial``) straight to ``trio.serve_listeners``: an
    idle connection's task stack is this frame, ``run`` and the read it waits in."""
    host.count_accept()
    hub, config = host.hub, host.server_config
    gate = WriteGate(stream)
    try:
        ip = remote_address(stream)
        accepted = None
        with trio.move_on_after(config.handshake_timeout) as handshake_scope:
            accepted = await open_handshake(gate, lambda request: host.admit(request.target, request.headers, ip))
        if handshake_scope.cancelled_caught:
            log.debug("handshake timed out")
            hub.counters.handshake_timeouts += 1
        if accepted is None:
            return
        request, identity, protocol = accepted
        del accepted
        expires_in = None if identity.expires_at is None else identity.expires_at - time.time()
        async with trio.open_nursery() as nursery:
            connection = ClientConnection(
                hub, WebSocketTransport(gate, protocol, request.trailing_data), nursery, host.flusher, config.close_timeout, ip,
                max_message_bytes=config.max_message_bytes, allowed_topics=identity.topics, expires_in=expires_in,
            )
            del request, identity, protocol  # the handshake (headers, credentials) is not kept for the connection's life
            unregister = host.register(connection)
            try:
                await connection.run()
            finally:
                unregister()
                hub.counters.count_close(connection.session.outbound.closing, connection.transport.peer_close)
            connection.finish()
    # One broken connection must never affect the others: whatever escapes is logged here.
    except* _EXPECTED as group:
        log.debug("connection ended: %r", group.exceptions)
    except* Exception as group:
        log.warning("connection ended by an unexpected error", exc_info=group)
    finally:
        await trio.aclose_forcefully(gate)
