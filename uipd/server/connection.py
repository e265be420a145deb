"""One client connection, from the accepted TCP stream to its close.

Per connection there are three tasks, all in the connection's own nursery: trio-websocket's
reader, our receive loop (which never awaits anything but the next message: every reply is
queued by the core), and the writer, which drains the session's bounded queue to the socket.
Whatever goes wrong inside a connection ends that connection only.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, HandshakeError, wrap_server_stream
from wsproto.utilities import ProtocolError

from uipd.auth import Identity
from uipd.core.admission import Refusal
from uipd.core.hub import Hub, Session
from uipd.server.clock import now
from uipd.server.transport import TransportClosed, WebSocketTransport, WriteGate, release_handshake

if TYPE_CHECKING:
    from uipd.config import ServerConfig

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003

# How peers break connections: a reset, a protocol error (trio-websocket issue #184), a close race.
_EXPECTED = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed, HandshakeError, ProtocolError, OSError)


class ClientConnection:
    """The shell of one session: moves its frames and owns its lifetime.

    An idle connection has no writer task: a frame that arrives while nothing is queued is
    written straight to the socket (``_send_now``); a writer task is started only when frames
    must wait (the socket is full, a write is under way) or a close or resync is due, and it
    ends when the queue is empty again.
    """

    __slots__ = ("hub", "transport", "nursery", "close_timeout", "remote", "session", "_writing", "_write_scope")

    def __init__(
        self,
        hub: Hub,
        transport: WebSocketTransport,
        nursery: trio.Nursery,
        close_timeout: float,
        remote: str = "?",
        *,
        allowed_topics: frozenset[str] | None = None,
        expires_in: float | None = None,
    ) -> None:
        self.hub = hub
        self.remote = remote
        """The client's address (for per-address limits and logs)."""
        self.transport = transport
        self.nursery = nursery
        """The connection's nursery: trio-websocket's reader and our writer run in it; cancelling
        its scope ends the connection."""
        self.close_timeout = close_timeout
        self._writing = False
        self._write_scope: trio.CancelScope | None = None
        self.session: Session = hub.connect(
            secrets.token_hex(8), now(), self._wake, self._send_now, allowed_topics=allowed_topics, expires_in=expires_in
        )

    def _send_now(self, frame: bytes) -> bool:
        """The core's fast path (nothing queued): write at once if no other write is under way."""
        transport = self.transport
        if self._writing or not transport.direct_write_possible:
            return False
        transport.gate.write_now(frame)
        if transport.gate.needs_flush:
            self._start_writer()  # the kernel took part of it: the writer sends the rest
        return True

    def _wake(self) -> None:
        """Called by the core, synchronously, when frames were queued or a close or resync is due."""
        if not self._writing:
            self._start_writer()
            return
        closing = self.session.outbound.closing
        if self._write_scope is not None and closing is not None and not closing.flush:
            # A client closed as a slow consumer gets a little time to take the frame in flight,
            # so its close frame can follow; past that its TCP connection is dropped.
            self._write_scope.deadline = min(self._write_scope.deadline, trio.current_time() + self.close_timeout)

    def _start_writer(self) -> None:
        self._writing = True
        try:
            self.nursery.start_soon(self._write_loop)
        except RuntimeError:  # the connection is over (its nursery is closed)
            self._writing = False

    def abort(self) -> None:
        self.nursery.cancel_scope.cancel()

    async def run(self) -> None:
        """The receive loop, until the peer closes or the connection breaks."""
        session, hub = self.session, self.hub
        try:
            while True:
                try:
                    message = await self.transport.receive()
                except TransportClosed:
                    return
                if isinstance(message, bytes):
                    session.outbound.request_close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", flush=True)
                elif session.outbound.closing is None:
                    hub.receive(session, message, now())
        finally:
            hub.disconnect(session)

    async def _write_loop(self) -> None:
        queue = self.session.outbound
        transport = self.transport
        try:
            while True:
                frames = queue.take()
                if frames or transport.gate.needs_flush:
                    closing = queue.closing
                    deadline = trio.current_time() + self.close_timeout if closing is not None and not closing.flush else math.inf
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
                    with trio.move_on_after(self.close_timeout):
                        await transport.close(queue.closing.code, queue.closing.reason)
                    self.abort()
                    return
                if self.hub.take_resync(self.session, now()):
                    continue
                return  # nothing left to write: no task while idle
        finally:
            self._writing = False


Admit = Callable[[str, Mapping[str, str], str], "Refusal | Identity"]
"""Decides a handshake from its target (path and query), headers (lower-case) and remote address."""


def remote_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None) or getattr(getattr(stream, "transport_stream", None), "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "?"
    except OSError:
        return "?"


async def serve_stream(
    stream: trio.abc.Stream,
    hub: Hub,
    config: ServerConfig,
    admit: Admit,
    register: Callable[[ClientConnection], Callable[[], None]],
) -> None:
    """Own one accepted TCP stream: handshake, run the client, close; never raise."""
    gate: WriteGate | None = None
    try:
        async with trio.open_nursery() as nursery:
            request = None
            with trio.move_on_after(config.handshake_timeout):
                # Starts trio-websocket's reader task in *our* nursery, so that an error inside it
                # (e.g. trio-websocket issue #184) ends this connection only.
                gate = WriteGate(stream)
                request = await wrap_server_stream(nursery, gate, message_queue_size=1, max_message_size=config.max_message_bytes)
            if request is None:
                log.debug("handshake timed out")
                hub.counters.handshake_timeouts += 1
                nursery.cancel_scope.cancel()
                return
            ip = remote_address(stream)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            decision = admit(request.path, headers, ip)
            if isinstance(decision, Refusal):
                await request.reject(decision.status, body=decision.body)
            else:
                ws = await request.accept()
                del request  # the handshake request (headers) is not kept for the connection's life
                release_handshake(ws)
                expires_in = None if decision.expires_at is None else decision.expires_at - time.time()
                connection = ClientConnection(
                    hub, WebSocketTransport(ws, gate), nursery, config.close_timeout, ip,
                    allowed_topics=decision.topics, expires_in=expires_in,
                )
                unregister = register(connection)
                try:
                    await connection.run()
                finally:
                    unregister()
                    hub.counters.count_close(connection.session.outbound.closing, ws.closed)
                # The receive side is over. A close we started may still be waiting for the
                # peer's close frame (closing the TCP connection with unread data would reset it
                # and lose our close frame): let the writer and reader finish, for a bounded time.
                nursery.cancel_scope.deadline = trio.current_time() + config.close_timeout
                return
            nursery.cancel_scope.cancel()
    # One broken connection must never affect the others: whatever escapes is logged here.
    except* _EXPECTED as group:
        log.debug("connection ended: %r", group.exceptions)
    except* Exception as group:
        log.warning("connection ended by an unexpected error", exc_info=group)
    finally:
        await trio.aclose_forcefully(gate if gate is not None else stream)
