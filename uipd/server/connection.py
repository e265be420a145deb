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
from typing import TYPE_CHECKING, Any, Protocol

import trio
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import ProtocolError

from uipd.auth import Identity
from uipd.core.admission import Refusal
from uipd.core.hub import Hub, Session
from uipd.server.clock import now
from uipd.server.flusher import Flusher
from uipd.server.handshake import UpgradeRequest, open_handshake
from uipd.server.transport import TransportClosed, WebSocketTransport, WriteGate

if TYPE_CHECKING:
    from uipd.config import ServerConfig

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003
PARSE_BYTES = 4096
"""Bytes handed to the frame parser at once (see ``run``): ~6 ms of wsproto for a slice of tiny frames."""
DISCARD_INTERVAL = 0.01
"""Seconds between two reads of a closing connection past what it may have parsed (see ``run``)."""

_client_ids = random.Random()  # seeded from os.urandom; ids name clients, they grant nothing
"""Client ids: a system call per connection (``secrets``) showed in the profile of a connection storm."""


def new_client_id() -> str:
    return "%016x" % _client_ids.getrandbits(64)

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
        client_id: str | None = None,
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
        self._due = True
        """Waiting for the flusher's next pass.  True while the session is made: the frames
        ``hub.connect`` queues must not make the flusher see a connection with no session yet (if
        ``connect`` raises, nothing refers to this half-built connection)."""
        self._write_scope: trio.CancelScope | None = None
        self.session: Session = hub.connect(
            client_id or new_client_id(), now(), self._wake, allowed_topics=allowed_topics, expires_in=expires_in
        )
        flusher.schedule(self)  # its connection message and SNAPSHOT

    def fault(self, step: str, exc: BaseException | None = None) -> None:
        """A bug in one of this connection's steps run by a shared task (the flusher's write
        pass, the heartbeat): one log line naming the client, and the connection is dropped, so
        the task goes on with the others."""
        log.error("client %s (%s): %s failed; dropping it", self.session.id, self.remote, step, exc_info=exc or True)
        self.abort()

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
        data = transport.take_trailing_data()
        parsed_while_closing = 0
        try:
            while not transport.closed:
                if outbound.closing is not None and parsed_while_closing >= PARSE_BYTES:
                    # A closing connection parses only to reach the peer's close frame, and no
                    # more than one slice: a client that floods past our close (pings,
                    # fragments) kept the loop parsing for close_timeout, which stalled every other
                    # client and the API.  The rest is read and dropped unparsed.
                    await self._discard_until_closed()
                    return
                if not data:
                    try:
                        data = await transport.gate.receive_some()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not data:
                        return  # the peer closed TCP
                else:
                    await trio.lowlevel.checkpoint()  # between two slices of one read
                # wsproto parses every frame of what it is fed before we see the first: fed a slice
                # at a time, a read full of tiny frames holds the loop a few ms at most.
                chunk, data = (data, b"") if len(data) <= PARSE_BYTES else (data[:PARSE_BYTES], data[PARSE_BYTES:])
                if outbound.closing is not None:
                    parsed_while_closing += len(chunk)
                events = transport.feed(chunk)
                for event in events:
                    if isinstance(event, TextMessage):
                        # The core gathers fragments, bounds them and counts them against the rate.
                        hub.receive_piece(session, event.data, event.frame_finished, event.message_finished, now())
                    elif isinstance(event, BytesMessage):
                        # At its first bytes: a binary message is never read to its end.
                        outbound.request_close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", flush=True)
                    elif isinstance(event, Ping):
                        if transport.open:
                            hub.ping(session, transport.pong_frame(event.payload), time.monotonic())
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

    async def _discard_until_closed(self) -> None:
        """Read and drop what the peer still sends until it closes (or our close timed out):
        closing a socket with unread data would reset it and lose our close frame.  A read per
        DISCARD_INTERVAL at most: a client flooding past our close is not copied at loopback speed."""
        while await self.transport.gate.receive_some():
            await trio.sleep(DISCARD_INTERVAL)

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
                if await self._idle():
                    continue
                return  # nothing left to write: no task while idle
        finally:
            self._writing = False

    async def _idle(self) -> bool:
        """The writer has nothing left to do: True once there is more (the writer stays), False
        to end the writer task (a plain socket: the flusher writes directly until it fills)."""
        return False

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


class TlsClientConnection(ClientConnection):
    """A connection with no synchronous write path (TLS: every byte goes through the SSL
    stream's ``send_all``), so every write needs a task.  Its writer task is kept for the
    connection's life, parked while the queue is empty, instead of being started for every
    flusher pass (which made ``uipd_writer_tasks_started_total`` follow the message rate).  Only
    TLS connections carry the extra slot; their SSL state is already several times the size of a
    plain connection."""

    __slots__ = ("_parked",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parked: trio.Event | None = None
        """Set while the writer waits for frames; the flusher's pass (``_start_writer``) wakes it."""
        super().__init__(*args, **kwargs)

    def _start_writer(self) -> None:
        parked = self._parked
        if parked is None:
            super()._start_writer()
            return
        self._parked = None
        self._writing = True
        parked.set()

    async def _idle(self) -> bool:
        self._parked = parked = trio.Event()
        self._writing = False  # frames queued from now on make the connection due, and wake us
        await parked.wait()
        return True


class ConnectionHost(Protocol):
    """What a connection needs of the daemon that accepted it."""

    hub: Hub
    flusher: Flusher

    @property
    def server_config(self) -> ServerConfig:
        """Read at each accept: a reloaded config applies to new connections."""

    def admit(self, target: str, headers: Mapping[str, str], ip: str) -> Refusal | Identity:
        """Decide a handshake from its target (path and query), headers (lower-case) and the
        client's address.  An admitted client holds a connection slot from now on (``register``
        takes it over, ``release`` gives it back): the 101 still has to be written, and with
        TLS that awaits, so the slot must be taken before any other handshake is decided."""

    def release(self, ip: str) -> None:
        """An admitted client went away (or failed) before it was registered: free its slot."""

    def register(self, connection: ClientConnection) -> Callable[[], None]:
        """Note an open connection (in the slot its admission took); returns what undoes it."""

    def count_refusal(self, refusal: Refusal) -> None:
        """A handshake was refused (every 400/426 of the handshake, and every admission refusal)."""

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

    This is the fault boundary of one connection: whatever goes wrong in it (its construction,
    registration, receive loop, writer, close) ends this connection only, with one log line
    naming the client.  The daemon's accept loop starts this straight in the daemon's nursery:
    an idle connection's task stack is this frame, ``run`` and the read it waits in."""
    hub, config = host.hub, host.server_config
    gate = WriteGate(stream)
    client_id, ip = new_client_id(), "?"
    reserved = False  # admitted and not registered yet: a connection slot is held for this client

    def decide(request: UpgradeRequest) -> Refusal | Identity:
        nonlocal reserved
        decision = host.admit(request.target, request.headers, ip)
        reserved = not isinstance(decision, Refusal)
        return decision

    try:
        host.count_accept()
        ip = remote_address(stream)
        outcome = None
        with trio.move_on_after(config.handshake_timeout) as handshake_scope:
            outcome = await open_handshake(gate, decide)
        if handshake_scope.cancelled_caught:
            log.debug("client %s (%s): handshake timed out", client_id, ip)
            hub.counters.handshake_timeouts += 1
        if not isinstance(outcome, tuple):
            if outcome is not None:
                host.count_refusal(outcome)
            return
        request, identity, protocol = outcome
        del outcome, decide  # kept for the connection's life otherwise (this frame is on its stack)
        expires_in = None if identity.expires_at is None else identity.expires_at - time.time()
        kind = ClientConnection if gate.has_fast_path else TlsClientConnection
        async with trio.open_nursery() as nursery:
            connection = kind(
                hub, WebSocketTransport(gate, protocol, request.trailing_data), nursery, host.flusher, config.close_timeout, ip,
                client_id=client_id, max_message_bytes=config.max_message_bytes, allowed_topics=identity.topics, expires_in=expires_in,
            )
            del request, identity, protocol  # the handshake (headers, credentials) is not kept for the connection's life
            try:
                unregister = host.register(connection)
            except BaseException:
                hub.disconnect(connection.session)  # run(), which ends the session, never started
                raise
            reserved = False  # the slot is the registered connection's now
            try:
                await connection.run()
            finally:
                unregister()
                hub.counters.count_close(connection.session.outbound.closing, connection.transport.peer_close)
            connection.finish()
    except* _EXPECTED as group:
        log.debug("client %s (%s): connection ended: %r", client_id, ip, group.exceptions)
    except* Exception as group:
        log.error("client %s (%s): connection ended by an unexpected error", client_id, ip, exc_info=group)
    finally:
        try:
            if reserved:
                host.release(ip)
            await trio.aclose_forcefully(gate)
        except Exception:
            log.error("client %s (%s): closing its connection failed", client_id, ip, exc_info=True)
