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
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, HandshakeError, wrap_server_stream
from wsproto.utilities import ProtocolError

from uipd.core.hub import Hub, Session
from uipd.core.outbound import CloseRequest
from uipd.server.clock import now
from uipd.server.transport import TransportClosed, WebSocketTransport, WriteGate

if TYPE_CHECKING:
    from uipd.config import ServerConfig

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003

# How peers break connections: a reset, a protocol error (trio-websocket issue #184), a close race.
_EXPECTED = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed, HandshakeError, ProtocolError, OSError)


class ClientConnection:
    """The shell of one session: moves its frames and owns its lifetime."""

    def __init__(self, hub: Hub, transport: WebSocketTransport, cancel_scope: trio.CancelScope, close_timeout: float) -> None:
        self.hub = hub
        self.transport = transport
        self.cancel_scope = cancel_scope
        """Cancelling it ends every task of this connection and closes the stream."""
        self.close_timeout = close_timeout
        self._writable: trio.Event | None = None
        self._write_scope: trio.CancelScope | None = None
        self.session: Session = hub.connect(secrets.token_hex(8), now(), self._wake)

    def _wake(self) -> None:
        """Called by the core, synchronously, when the queue has work (or a close) for the writer."""
        writable = self._writable
        if writable is None:
            # The writer is busy and will take the new frames when it loops.
            if self._write_scope is not None:
                closing = self.session.outbound.closing
                if closing is not None and not closing.flush:
                    # A client closed as a slow consumer gets a little time to take the frame in
                    # flight, so its close frame can follow; past that its TCP connection is dropped.
                    self._write_scope.deadline = min(self._write_scope.deadline, trio.current_time() + self.close_timeout)
            return
        queue = self.session.outbound
        gate = self.transport.gate
        if queue.closing is None and not queue.resync_pending and self.transport.direct_write_possible:
            # Fast path: the writer is idle, so write straight to the socket with no task switch.
            frames = queue.take()
            gate.write_now(frames[0] if len(frames) == 1 else b"".join(frames))
            if not gate.needs_flush:
                queue.written()
                return
        writable.set()

    def abort(self) -> None:
        self.cancel_scope.cancel()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                await self._receive_loop()
                # The peer closed or the connection broke: nothing more can be written.
                nursery.cancel_scope.cancel()
        finally:
            self.hub.disconnect(self.session)

    async def _receive_loop(self) -> None:
        session, hub = self.session, self.hub
        while True:
            try:
                message = await self.transport.receive()
            except TransportClosed:
                return
            if isinstance(message, bytes):
                session.outbound.request_close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", flush=True)
                continue
            if session.outbound.closing is None:
                hub.receive(session, message, now())

    async def _write_loop(self, connection_scope: trio.CancelScope) -> None:
        queue = self.session.outbound
        transport = self.transport
        while True:
            frames = queue.take()
            if frames or transport.gate.needs_flush:
                closing = queue.closing
                deadline = trio.current_time() + self.close_timeout if closing is not None and not closing.flush else math.inf
                with trio.CancelScope(deadline=deadline) as self._write_scope:
                    try:
                        await transport.write(b"".join(frames))
                    except TransportClosed:
                        connection_scope.cancel()
                        return
                scope, self._write_scope = self._write_scope, None
                if scope.cancelled_caught:
                    # A partial frame went out: no close frame can follow it, drop the connection.
                    connection_scope.cancel()
                    return
                queue.written()
                continue
            if queue.closing is not None:
                await self._close(queue.closing)
                connection_scope.cancel()
                return
            if self.hub.take_resync(self.session, now()):
                continue
            self._writable = trio.Event()
            await self._writable.wait()
            self._writable = None

    async def _close(self, request: CloseRequest) -> None:
        with trio.move_on_after(self.close_timeout):
            await self.transport.close(request.code, request.reason)


async def serve_stream(
    stream: trio.abc.Stream,
    hub: Hub,
    config: ServerConfig,
    register: Callable[[ClientConnection], Callable[[], None]],
    accepting: Callable[[], bool],
) -> None:
    """Own one accepted TCP stream: handshake, run the client, close; never raise."""
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
                nursery.cancel_scope.cancel()
                return
            path = request.path.split("?", 1)[0]
            if not accepting():
                await request.reject(503, body=b"shutting down\n")
            elif path not in config.paths:
                await request.reject(404, body=b"not found\n")
            else:
                ws = await request.accept()
                connection = ClientConnection(hub, WebSocketTransport(ws, gate), nursery.cancel_scope, config.close_timeout)
                unregister = register(connection)
                try:
                    await connection.run()
                finally:
                    unregister()
            nursery.cancel_scope.cancel()
    # One broken connection must never affect the others: whatever escapes is logged here.
    except* _EXPECTED as group:
        log.debug("connection ended: %r", group.exceptions)
    except* Exception as group:
        log.warning("connection ended by an unexpected error", exc_info=group)
    finally:
        await trio.aclose_forcefully(stream)
