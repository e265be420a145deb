"""How bytes reach a client's socket, and how they come back as WebSocket events.

After the opening handshake (:mod:`uipd.server.handshake`) a connection is wsproto's frame layer
(``wsproto.connection.Connection``, sans-IO) over a :class:`WriteGate`.  No task runs for an idle
connection but its one receive loop, and no per-connection object is kept that the wire does not
need: this is what keeps an idle client at a few KiB.

Our frames are already encoded and framed once per message (not once per client), so they never
pass through wsproto: the gate writes them as they are.  It adds a synchronous fast path: when
nothing else is being written, the flusher's pass (:mod:`uipd.server.flusher`; the fan-out only
queues frames) writes a client's queued frames straight to the non-blocking socket with one
``writev`` and no task switch.  If the kernel takes only part of them, the rest is kept and
written before any other byte, so frames from different writers (the flusher's pass, the writer
task, a close reply) never interleave.

The one private member touched: wsproto's per-connection event deque is replaced by an empty
tuple (it is only used for an API call never made here); wsproto is pinned exactly and
``check_pinned_internals`` (run by the tests) fails if that use changes.
"""

from __future__ import annotations

import inspect
import os
import struct
from collections.abc import Callable, Sequence
from functools import lru_cache

import trio
import wsproto
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Pong, TextMessage
from wsproto.frame_protocol import (
    LOCAL_ONLY_CLOSE_REASONS, MAX_CLOSE_REASON, MAX_PROTOCOL_CLOSE_REASON, MIN_CLOSE_REASON, Buffer, CloseReason, FrameDecoder, FrameProtocol,
)
from wsproto.utilities import LocalProtocolError

from uipd.core.closecodes import MESSAGE_TOO_BIG
from uipd.server.idle import RECEIVE_BYTES, Consume, IdleReader

PINNED_WSPROTO = "1.3.2"

IOV_MAX = 1024
"""Buffers one writev may take (Linux)."""



_NO_EVENTS = ()


@lru_cache(maxsize=64, typed=True)  # typed: wsproto writes CloseReason.NO_STATUS_RCVD as no code, the int 1005 as 1000
def server_close_frame(code: int, reason: str) -> bytes:
    """Our close frame for (code, reason), as wsproto serializes it: a server's frames are not
    masked and control frames never compressed, so one copy serves every connection (a drain
    writes the same 1001 to each client)."""
    return bytes(Connection(ConnectionType.SERVER).send(CloseConnection(code, reason)))


def _one_masked_frame(data: bytes, first_byte: int) -> bytes | None:
    """The unmasked payload if ``data`` is exactly one masked client frame whose first byte
    (FIN, RSV bits, opcode) is ``first_byte`` and whose length is in the shortest form, as
    wsproto requires; None for anything else (which then goes through wsproto)."""
    if len(data) < 6 or data[0] != first_byte or data[1] & 0x80 == 0:
        return None
    n = data[1] & 0x7F
    if n == 126:
        if len(data) < 8:
            return None
        n = int.from_bytes(data[2:4], "big")
        if n <= 125:
            return None  # wsproto refuses a longer length form than needed
        start = 8
    elif n == 127:
        return None  # 64 KiB or more: wsproto's (and past max_message_bytes anyway)
    else:
        start = 6
    if len(data) != start + n:
        return None
    # the mask applied with one big-integer XOR (C speed, where wsproto translates byte by byte)
    mask = (data[start - 4:start] * (n // 4 + 1))[:n]
    return (int.from_bytes(data[start:], "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


def lone_close_reply(data: bytes) -> CloseConnection | None:
    """``data`` as exactly one masked client close frame that wsproto would accept (its code
    valid, its reason UTF-8), as the event wsproto would make of it; None for anything else,
    which then goes through wsproto (and its refusal, if it is one)."""
    payload = _one_masked_frame(data, 0x88)
    if payload is None or len(payload) == 1 or len(payload) > 125:
        return None  # a control frame's payload is at most 125 bytes
    if not payload:
        return CloseConnection(CloseReason.NO_STATUS_RCVD, "")
    (code,) = struct.unpack("!H", payload[:2])
    if code < MIN_CLOSE_REASON or code > MAX_CLOSE_REASON:
        return None
    try:
        code = CloseReason(code)
    except ValueError:
        if code <= MAX_PROTOCOL_CLOSE_REASON:
            return None  # reserved
    if code in LOCAL_ONLY_CLOSE_REASONS:
        return None
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return CloseConnection(code, reason)


def lone_text_message(data: bytes) -> TextMessage | None:
    """``data`` as exactly one whole masked client text message in one frame (FIN, no RSV bit,
    its length in the shortest form, valid UTF-8), as the event wsproto would make of it; None
    for anything else, which goes through wsproto.  A dashboard's subscribe is such a frame: parsed
    here, it needs no frame layer (~0.9 KiB a client, and its construction on every connect)."""
    payload = _one_masked_frame(data, 0x81)
    if payload is None:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return TextMessage(text, frame_finished=True, message_finished=True)


class TransportClosed(Exception):
    """The connection is closed or broken; nothing more can be written."""


class WriteGate:
    """Wraps the client's stream: serializes every writer and offers a synchronous write."""

    __slots__ = ("stream", "_lock", "_pending", "_broken", "_closed", "_fd", "_drained", "_idle")

    def __init__(self, stream: trio.abc.Stream, idle: IdleReader | None = None) -> None:
        self.stream = stream
        self._idle = idle
        """Where the receive loop parks while the socket is drained (plain sockets only)."""
        self._lock: trio.StrictFIFOLock | None = None
        """Serializes the waiting writers; made by the first (~330 bytes most connections, all
        written by the flusher's direct path, never need)."""
        self._pending: Sequence[bytes | memoryview] = ()
        """What the fast path could not write (the rest of a frame, the frames after it):
        written before anything else."""
        self._broken = False
        self._closed = False
        """Set by ``aclose``: the descriptor number may already belong to another connection."""
        self._drained = False
        """The last read took less than it asked for: the socket is most likely empty, so the
        next read waits first (an idle client's pong costs one read, not a read that fails too)."""
        try:
            self._fd: int | None = stream.socket.fileno()  # type: ignore[attr-defined]
        except AttributeError:  # not a socket (e.g. a TLS stream): no fast path
            self._fd = None

    # -- the fast path ----------------------------------------------------------------------------

    @property
    def has_fast_path(self) -> bool:
        """A plain socket: ``write_now`` may be used (never on TLS)."""
        return self._fd is not None

    @property
    def direct_write_possible(self) -> bool:
        """True when no other write is under way, so ``write_now`` may be used."""
        return self._fd is not None and not (self._lock is not None and self._lock.locked()) and not self._pending and not self._broken and not self._closed

    def write_now(self, frames: list[bytes]) -> None:
        """Write ``frames`` with one system call, without blocking (only when
        ``direct_write_possible``).  What the kernel does not take now is kept and written first
        by the next ``send_all`` (``needs_flush``)."""
        assert self._fd is not None
        if len(frames) > IOV_MAX:
            frames, rest = frames[:IOV_MAX], frames[IOV_MAX:]
        else:
            rest = []
        try:
            n = os.write(self._fd, frames[0]) if len(frames) == 1 else os.writev(self._fd, frames)
        except BlockingIOError:
            n = 0
        except OSError:  # reset, broken pipe: the next send_all reports it
            self._broken = True
            return
        if not rest and n == (len(frames[0]) if len(frames) == 1 else sum(map(len, frames))):
            return  # the common case: the kernel took everything
        pending: list[bytes | memoryview] = []
        for frame in frames:
            if n >= len(frame):
                n -= len(frame)
            elif n:
                pending.append(memoryview(frame)[n:])  # no copy of a large snapshot's remainder
                n = 0
            else:
                pending.append(frame)
        self._pending = pending + rest

    @property
    def needs_flush(self) -> bool:
        return bool(self._pending) or self._broken

    @property
    def broken(self) -> bool:
        """A direct write found the connection reset: nothing more can be written."""
        return self._broken

    # -- the waiting path -------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """``send_all`` that takes the synchronous fast path when nothing else is being written
        (the handshake's answer: no lock, no task switch)."""
        if self.direct_write_possible:
            self.write_now([data])
            if not self.needs_flush:
                return
            data = b""
        await self.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._writers():
            await self._send_locked(data)

    async def send_unless(self, data: bytes, closed: Callable[[], bool]) -> None:
        """Write ``data`` unless ``closed()`` is true once it is our turn (a close frame must stay
        the last frame)."""
        async with self._writers():
            if closed():
                raise TransportClosed
            await self._send_locked(data)

    def _writers(self) -> trio.StrictFIFOLock:
        if self._lock is None:
            self._lock = trio.StrictFIFOLock()
        return self._lock

    async def _send_locked(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken:
            raise trio.BrokenResourceError("the connection broke during a direct write")
        if self._pending:
            pending, self._pending = self._pending, ()
            for part in pending:
                await self.stream.send_all(part)
        if data:
            await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int = RECEIVE_BYTES, consume: Consume | None = None) -> bytes:
        """The next bytes from the peer (b"" at its EOF).

        On a plain socket this reads the descriptor itself (``wait_readable`` + ``os.read``),
        like ``SocketStream.receive_some`` does but without its five nested frames: an idle
        connection's one task waits here, and every frame on its stack stays allocated.  With
        ``consume`` and an idle reader, a drained socket is waited for by the idle reader
        (:mod:`uipd.server.idle`), which reads it and returns here only what ``consume`` did
        not take."""
        fd = self._fd
        if fd is None:
            return await self.stream.receive_some(max_bytes)
        waited = self._drained and not self._closed
        if waited:
            idle = self._idle
            if consume is not None and idle is not None and idle.running and max_bytes == RECEIVE_BYTES:
                data = await idle.wait(fd, consume)
                self._drained = len(data) < max_bytes
                return data
            await trio.lowlevel.wait_readable(fd)
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the connection was closed")
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                data = None  # wait outside the except block: a live exception would stay allocated
            except OSError as exc:  # reset
                raise trio.BrokenResourceError(exc) from exc
            if data is None:
                await trio.lowlevel.wait_readable(fd)
                waited = True
                continue
            self._drained = len(data) < max_bytes
            if not waited:
                # A client that keeps sending must not starve the others (a wait was a checkpoint:
                # a second one would cost an idle client's pong a second task switch).
                await trio.lowlevel.checkpoint()
            return data

    async def send_eof(self) -> None:
        """Shut down our sending side, where the stream can (TCP; not TLS)."""
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is not None and not self._closed:
            async with self._writers():
                await send_eof()

    async def aclose(self) -> None:
        self._closed = True
        if self._idle is not None and self._fd is not None:
            self._idle.closing(self._fd)
        await self.stream.aclose()

    def close_now(self) -> bool:
        """Close a plain socket at once, without a checkpoint (``aclose_forcefully``'s cancelled
        one raised and caught a Cancelled per connection: the most of a 19,000-client drain).
        False: not a plain socket (TLS): ``aclose`` it."""
        if self._fd is None:
            return False
        self._closed = True
        if self._idle is not None:
            self._idle.closing(self._fd)
        self.stream.socket.close()  # type: ignore[attr-defined]
        return True


class WebSocketTransport:
    """One open WebSocket: wsproto's frame layer for what arrives, the gate for what leaves.

    The close handshake (RFC 6455 5.5.1): whoever closes first sends a close frame and nothing
    after it; the other side answers with one; the TCP connection is closed after that.  Once a
    close frame of ours is out (``close_sent``), every further write is refused.
    """

    __slots__ = ("gate", "_protocol", "_decoder", "_trailing_data", "close_sent", "peer_close", "violation")

    def __init__(self, gate: WriteGate, protocol: Connection | None, trailing_data: bytes = b"") -> None:
        self.gate = gate
        self._protocol: Connection | None = None
        """wsproto's frame layer, made when first needed (None: an uncompressed connection that
        has sent nothing but lone pongs, which need none: ~0.9 KiB an idle client never uses)."""
        self._decoder: FrameDecoder | None = None
        """wsproto's frame decoder: ``lone_pong`` asks it whether a frame is half-read."""
        if protocol is not None:
            self._adopt(protocol)
        self._trailing_data = trailing_data
        """Bytes the client sent right behind its handshake: its first frames."""
        self.close_sent = False
        self.peer_close: CloseConnection | None = None
        """The peer's close frame, once it arrived (its code is counted in the metrics)."""
        self.violation = False
        """A frame broke RFC 6455: nothing after it can be parsed."""

    # -- receiving --------------------------------------------------------------------------------

    def _adopt(self, protocol: Connection) -> Connection:
        # wsproto keeps a deque (~600 bytes) for events it makes up itself; it is only used by
        # receive_data(None), which is never called here: an empty tuple reads the same.
        protocol._events = _NO_EVENTS  # type: ignore[assignment]
        self._decoder = protocol._proto._frame_decoder  # type: ignore[attr-defined]
        self._protocol = protocol
        return protocol

    def _frames(self) -> Connection:
        """wsproto's frame layer, made now if it was not (an uncompressed connection's)."""
        return self._protocol or self._adopt(Connection(ConnectionType.SERVER))

    def take_trailing_data(self) -> bytes:
        """Bytes the client sent right behind its handshake (its first frames), once."""
        data, self._trailing_data = self._trailing_data, b""
        return data

    def lone_pong(self, data: bytes) -> bool:
        """``data`` is exactly one empty client pong (the answer to our heartbeat ping: FIN, opcode
        0xA, masked, length 0, its mask key) read at a frame boundary of an open connection.  It
        is a sign of life and nothing else, so it needs no parsing: wsproto took ~9 µs to say
        so, and an idle daemon reads one per client every ``[heartbeat] interval``.  Anything
        else, or a pong behind half a frame, goes through ``feed``."""
        if len(data) != 6 or data[0] != 0x8A or data[1] != 0x80:
            return False
        decoder, protocol = self._decoder, self._protocol
        if decoder is None or protocol is None:
            return not self.close_sent  # nothing parsed yet: a boundary, and open unless our close went out
        return decoder.header is None and not decoder.buffer.buffer and protocol.state is ConnectionState.OPEN

    def feed(self, data: bytes) -> list[Event]:
        """The events decoded from bytes the peer sent.

        A frame that breaks the protocol (bad opcode, unmasked, invalid UTF-8, ...) comes back as
        a ``CloseConnection`` with its 1002/1007 code that wsproto made up, leaving its state as
        it was: it sets :attr:`violation`.  A close frame the peer really sent moves the state on."""
        protocol = self._protocol
        if protocol is None and self.close_sent:
            if self.peer_close is not None:
                raise LocalProtocolError("Connection already closed.")  # as wsproto's closed connection does
            # Our close went out with no frame layer built (``close_frame``): the usual answer,
            # one close frame, ends the handshake without one (a drain reads one from every
            # client; building wsproto's layer to parse it was a fifth of the drain's CPU).
            reply = lone_close_reply(data)
            if reply is not None:
                self.peer_close = reply
                return [reply]
            protocol = self._frames()
            protocol.send(CloseConnection(1000))  # its state as if it had sent our close (the bytes went out already)
        elif protocol is None:
            # Nothing parsed yet, so this is a frame boundary of an open connection: a whole
            # text message in one frame (a subscribe) needs no frame layer either.
            message = lone_text_message(data)
            if message is not None:
                return [message]
            protocol = self._frames()
        protocol.receive_data(data)
        events = []
        decoded = protocol.events()
        while True:
            before = protocol.state
            event = next(decoded, None)
            if event is None:
                return events
            if isinstance(event, CloseConnection):
                if protocol.state is before:
                    self.violation = True  # wsproto parses nothing more after this
                    if event.code == MESSAGE_TOO_BIG.code:  # our inflater's bound (uipd.server.deflate), not "error in extension"
                        event = CloseConnection(event.code, MESSAGE_TOO_BIG.reason)
                else:
                    self.peer_close = event
            events.append(event)

    @property
    def open(self) -> bool:
        """Neither side has sent a close frame."""
        protocol = self._protocol
        if protocol is None:
            return not self.close_sent
        return protocol.state is ConnectionState.OPEN

    @property
    def closed(self) -> bool:
        """Both close frames were exchanged: nothing more will be read or written."""
        protocol = self._protocol
        if protocol is None:
            return self.close_sent and self.peer_close is not None
        return protocol.state is ConnectionState.CLOSED

    # -- writing ----------------------------------------------------------------------------------

    @property
    def direct_write_possible(self) -> bool:
        """See :class:`WriteGate`; never after a close frame went out."""
        return not self.close_sent and self.gate.direct_write_possible

    def _closing(self) -> bool:
        return self.close_sent

    async def write(self, data: bytes) -> None:
        """Write already-framed bytes (and any pending remainder first; ``b""``: only that, also
        after our close frame, which it may end with).  Cancelling it mid-write can leave a
        partial frame on the wire: the connection must be dropped then."""
        try:
            if data:
                await self.gate.send_unless(data, self._closing)
            else:
                await self.gate.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed from None

    def pong_frame(self, payload: bytes) -> bytes:
        """The pong answering a client's ping (queued like any control frame)."""
        return self._frames().send(Pong(payload))

    def close_frame(self, code: int, reason: str) -> bytes:
        """Our close frame, or the answer to the peer's, for the caller to write; from now on
        nothing else may be written (``close_sent``).  The flusher's pass writes it directly
        (a drain closes every client in one pass, no task each); ``close`` awaits it."""
        protocol = self._protocol
        if protocol is None:
            # Nothing parsed yet, so the peer has not closed: our close needs no frame layer
            # (``feed`` parses the usual answer without one, and builds it for anything else).
            frame: bytes | bytearray = server_close_frame(code, reason)
        elif protocol.state is ConnectionState.REMOTE_CLOSING and self.peer_close is not None:
            frame = protocol.send(self.peer_close.response())
        else:
            frame = protocol.send(CloseConnection(code, reason))
        self.close_sent = True
        return frame

    async def close(self, code: int, reason: str) -> None:
        """Send our close frame, or the answer to the peer's; raises TransportClosed if the
        connection broke.  The caller bounds the wait."""
        if self.close_sent:
            return
        frame = self.close_frame(code, reason)
        try:
            await self.gate.send_all(frame)  # under the gate's lock: after any write under way
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed from None


def check_pinned_internals() -> list[str]:
    """What this module relies on in wsproto beyond its public API, and is missing (empty when
    all is there): wsproto is pinned exactly, and the tests run this."""
    problems = []
    if wsproto.__version__ != PINNED_WSPROTO:
        problems.append(f"wsproto {wsproto.__version__} installed, {PINNED_WSPROTO} pinned")
    if "while self._events:" not in inspect.getsource(Connection.events):
        problems.append("wsproto's Connection.events no longer drains _events with a truth test")
    if inspect.getsource(Connection).count("self._events.append") != 1:  # the receive_data(None) one
        problems.append("wsproto's Connection queues events of its own in more places")
    # uipd.server.deflate.DeflateExtension: a duck-typed extension that reads the parsed header.
    decoder = inspect.getsource(FrameDecoder.process_buffer)
    if "frame_inbound_payload_data(self" not in decoder or "frame_inbound_complete(self, self.header.fin)" not in decoder:
        problems.append("wsproto's FrameDecoder no longer calls the inbound extension hooks with itself and its header set")
    # WebSocketTransport.lone_pong: "no frame half-read" is the decoder's header unset and its buffer empty.
    if "self._frame_decoder = FrameDecoder(" not in inspect.getsource(FrameProtocol.__init__):
        problems.append("wsproto's FrameProtocol no longer keeps its FrameDecoder in _frame_decoder")
    if "self._proto = FrameProtocol(" not in inspect.getsource(Connection.__init__):
        problems.append("wsproto's Connection no longer keeps its FrameProtocol in _proto")
    decoder_init = inspect.getsource(FrameDecoder.__init__)
    if "self.buffer = Buffer()" not in decoder_init or "self.header: Header | None = None" not in decoder_init:
        problems.append("wsproto's FrameDecoder no longer keeps a Buffer in buffer and the frame's header in header")
    if "self.buffer = bytearray()" not in inspect.getsource(Buffer.__init__) or "del self.buffer[: self.bytes_used]" not in inspect.getsource(Buffer.commit):
        problems.append("wsproto's Buffer no longer keeps its unread bytes in a bytearray it trims on commit")
    if hasattr(FrameDecoder, "__slots__"):
        problems.append("wsproto's FrameDecoder has slots: the inflater of a message cannot be kept on it")
    if "ext.enabled()" not in inspect.getsource(FrameProtocol.__init__):
        problems.append("wsproto's FrameProtocol no longer drops the extensions a handshake did not enable")
    return problems
