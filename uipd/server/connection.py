"""One client connection, from the accepted TCP stream to its close.

An open connection has one task: its receive loop, which never awaits anything but the next bytes
from the peer (every reply is queued by the core); while its socket is drained the loop is parked
with the idle reader (:mod:`uipd.server.idle`), which takes its pongs without waking it.  A writer task (:mod:`uipd.server.writer`)
exists only while frames wait for a full socket, or a close or resync is due.  Both run in the
connection's own nursery, and whatever goes wrong inside a connection ends that connection only.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import trio
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import ProtocolError

from uipd.runtime.auth import Identity
from uipd.core.admission import INTERNAL_ERROR, Refusal
from uipd.core.hub import Hub
from uipd.core.recovery import NO_ASK, parse_handshake_query
from uipd.core.upgrade import refusal_answer
from uipd.server.clock import monotonic, now, spread, wall
from uipd.server.flusher import Flusher
from uipd.server.handshake import UpgradeRequest, open_handshake, refuse_at_once
from uipd.server.idle import IdleReader
from uipd.server.transport import TransportClosed, WebSocketTransport, WriteGate
from uipd.server.writer import ConnectionWriter, TlsWriter

if TYPE_CHECKING:
    from uipd.config import ServerConfig

log = logging.getLogger(__name__)

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


class ClientConnection(ConnectionWriter):
    """The shell of one session: the receive loop (``run``) feeds what the peer sends to the core;
    the write side and the close are :class:`~uipd.server.writer.ConnectionWriter`'s."""

    __slots__ = ()

    async def run(self) -> None:
        """The receive loop, until the close handshake is done or the connection breaks."""
        session, hub, transport = self.session, self.hub, self.transport
        outbound = session.outbound
        data = transport.take_trailing_data()
        try:
            while not transport.closed:
                if not data:
                    try:
                        data = await transport.gate.receive_some(consume=self._idle_bytes)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not data:
                        return  # the peer closed TCP
                else:
                    await trio.lowlevel.checkpoint()  # between two slices of one read
                if self._idle_bytes(data):
                    data = b""
                    continue
                # wsproto parses every frame of what it is fed before we see the first: fed a slice
                # at a time, a read full of tiny frames holds the loop a few ms at most.
                chunk, data = (data, b"") if len(data) <= PARSE_BYTES else (data[:PARSE_BYTES], data[PARSE_BYTES:])
                if outbound.closing is not None and not hub.keep_parsing(session, len(chunk)):
                    await self._discard_until_closed()  # the core's call: a closing client's flood goes unparsed
                    return
                if self._answer(transport.feed(chunk)):
                    await self._discard_until_closed()
                    return
        finally:
            hub.disconnect(session)

    def _idle_bytes(self, data: bytes) -> bool:
        """Bytes read while nothing else was (by the receive loop, or by the idle reader for a
        parked loop): True if they were a lone pong, an idle client's heartbeat answer, taken as
        a sign of life with nothing to parse (see ``WebSocketTransport.lone_pong``)."""
        if self.session.outbound.closing is None and self.transport.lone_pong(data):
            self.hub.pong(self.session, monotonic())
            return True
        return False

    def _answer(self, events: list[Event]) -> bool:
        """``_handle`` the events, and write what that queued (SUBSCRIBED, a PONG, an ERROR, a
        close) at once, not in the flusher's pass a scheduler round later: a connecting dashboard
        waits for its SUBSCRIBED.  While handling, the connection counts as due, so the queue's
        wake-ups ask for no pass; ``flush`` clears that.  When a pass is due anyway (fan-out
        frames are waiting for it), the answers go with them."""
        if self._due:
            return self._handle(events)
        self._due = True
        try:
            return self._handle(events)
        finally:
            try:
                self.flush()
            except Exception:  # a bug in the write ends this connection, as in the flusher's pass
                self.fault("write")

    def _handle(self, events: list[Event]) -> bool:
        """Hand each event to the hub; True: parse nothing more (see ``Hub.peer_close``).  A frame
        of its own: the events (a Pong and its list) die on return, where on the receive loop's
        stack they stayed until the next read (an idle client's next pong, 10 s later): garbage
        the collector kept walking, 19,000 times over."""
        session, hub, transport = self.session, self.hub, self.transport
        for event in events:
            if isinstance(event, TextMessage):
                # The core gathers fragments, bounds them and counts them against the rate.
                hub.receive_piece(session, event.data, event.frame_finished, event.message_finished, now())
            elif isinstance(event, BytesMessage):
                hub.receive_binary(session)
            elif isinstance(event, Ping):
                if transport.open:
                    hub.ping(session, transport.pong_frame(event.payload), monotonic())
            elif isinstance(event, Pong):
                hub.pong(session, monotonic())
            elif isinstance(event, CloseConnection):
                # The peer's close is answered by the writer; after a frame that broke
                # RFC 6455 the core says to parse nothing more.
                if hub.peer_close(session, event.code, event.reason, violation=transport.violation):
                    return True
        return False

    async def _discard_until_closed(self) -> None:
        """Read and drop what the peer still sends until it closes (or our close timed out):
        closing a socket with unread data would reset it and lose our close frame.  A read per
        DISCARD_INTERVAL at most: a client flooding past our close is not copied at loopback speed."""
        while await self.transport.gate.receive_some():
            await trio.sleep(DISCARD_INTERVAL)


class TlsClientConnection(TlsWriter, ClientConnection):
    """A TLS client's connection: the same receive loop, the TLS write side (its writer task
    kept for the connection's life, see :class:`~uipd.server.writer.TlsWriter`)."""

    __slots__ = ()


class DeflateClientConnection(ClientConnection):
    """A client that negotiated permessage-deflate: written each frame's compressed variant."""

    __slots__ = ()
    deflate = True


class TlsDeflateClientConnection(TlsClientConnection):
    __slots__ = ()
    deflate = True


_KINDS = {
    (True, False): ClientConnection, (False, False): TlsClientConnection,
    (True, True): DeflateClientConnection, (False, True): TlsDeflateClientConnection,
}
"""(plain socket, compressing) -> the connection class."""


class ConnectionHost(Protocol):
    """What a connection needs of the daemon that accepted it."""

    hub: Hub
    flusher: Flusher
    idle_reader: IdleReader | None
    """Where drained plain-socket connections wait for their next bytes (None: in trio's epoll)."""

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

    def start_handshake(self) -> Refusal | None:
        """A handshake begins (``end_handshake`` when it is over), or the refusal answered at once
        when too many are in progress (``[server] max_handshakes``)."""

    def end_handshake(self) -> None:
        """A handshake ``start_handshake`` let in is over, whatever its outcome."""


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
    gate = WriteGate(stream, host.idle_reader)
    client_id, ip = new_client_id(), "?"
    reserved = False  # admitted and not registered yet: a connection slot is held for this client
    unanswered: bytes | None = None  # the 101 of an accepted handshake, until the connection writes it
    ask = NO_ASK

    def decide(request: UpgradeRequest) -> Refusal | Identity:
        nonlocal reserved, ask
        decision = host.admit(request.target, request.headers, ip)
        reserved = not isinstance(decision, Refusal)
        if isinstance(decision, Refusal):
            return decision
        # ?topics= and ?since= (PROTOCOL.md section 8): 400 malformed or unknown, 403 outside the claim.
        asked = parse_handshake_query(request.target, hub.topics, decision.topics, hub.settings.max_subscriptions)
        if isinstance(asked, Refusal):
            host.release(ip)
            reserved = False
            return asked
        ask = asked
        return decision

    try:
        host.count_accept()
        ip = remote_address(stream)
        busy = host.start_handshake()
        if busy is not None:  # a storm past max_handshakes: 503 and Retry-After now, not a timeout later
            host.count_refusal(busy)
            with trio.move_on_after(config.close_timeout):
                await refuse_at_once(gate, busy)
            return
        outcome = None
        try:
            with trio.move_on_after(spread(config.handshake_timeout)) as handshake_scope:
                outcome = await open_handshake(
                    gate, decide, inflate_limit=config.max_message_bytes if config.compression else None
                )
        finally:
            host.end_handshake()
        if handshake_scope.cancelled_caught:
            log.debug("client %s (%s): handshake timed out", client_id, ip)
            hub.counters.handshake_timeouts += 1
        del handshake_scope  # this frame is on an idle connection's stack: kept for its life otherwise
        if not isinstance(outcome, tuple):
            if outcome is not None:
                host.count_refusal(outcome)
            return
        request, identity, protocol, unanswered = outcome
        del outcome, decide  # kept for the connection's life otherwise (this frame is on its stack)
        expires_in = None if identity.expires_at is None else identity.expires_at - wall()
        kind = _KINDS[gate.has_fast_path, request.deflate]
        compression = host.flusher.compression
        async with trio.open_nursery() as nursery:
            connection = kind(
                hub, WebSocketTransport(gate, protocol, request.trailing_data), nursery, host.flusher, config.close_timeout, ip,
                client_id=client_id, allowed_topics=identity.topics, expires_in=expires_in, topics=ask.topics, since=ask.since,
            )
            del request, identity, protocol, ask  # the handshake (headers, credentials) is not kept for the connection's life
            try:
                unregister = host.register(connection)
            except BaseException:
                hub.disconnect(connection.session)  # run(), which ends the session, never started
                raise
            reserved = False  # the slot is the registered connection's now
            answer, unanswered = unanswered, None
            try:
                connection.open(answer)
            except Exception:  # a bug in the write: dropped as in the flusher's pass (``run`` ends the session)
                connection.fault("open")
            del answer
            compression.clients += kind.deflate
            try:
                await connection.run()
            finally:
                compression.clients -= kind.deflate
                unregister()
                hub.counters.count_close(connection.session.outbound.closing, connection.transport.peer_close)
            connection.finish()
    except* _EXPECTED as group:
        log.debug("client %s (%s): connection ended: %r", client_id, ip, group.exceptions)
    except* Exception as group:
        log.error("client %s (%s): connection ended by an unexpected error", client_id, ip, exc_info=group)
    finally:
        try:
            if unanswered is not None:
                # Accepted, then the session could not be made: the client gets a 500, not a silent close.
                host.count_refusal(INTERNAL_ERROR)
                if gate.direct_write_possible:
                    gate.write_now([refusal_answer(INTERNAL_ERROR)])
            if reserved:
                host.release(ip)
            if not gate.close_now():  # TLS: its close may await
                await trio.aclose_forcefully(gate)
        except Exception:
            log.error("client %s (%s): closing its connection failed", client_id, ip, exc_info=True)
