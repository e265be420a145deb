"""How bytes reach a client's socket, and the one place that touches trio-websocket internals.

trio-websocket does the opening handshake, receives frames and answers the peer's pings and
close.  It is handed a :class:`WriteGate` instead of the raw TCP stream, and every byte for the
client goes through that gate: trio-websocket's own frames (pongs, close) and ours.

Our frames are already encoded and framed once per message (not once per client), so they are
written without trio-websocket's ``send_message`` (which re-frames per client and blocks once
~150 KB are in flight).  The gate adds a synchronous fast path: when nothing else is being
written, the fan-out writes a frame straight to the non-blocking socket, with no task switch
(trio's floor is ~7 us a delivery this way, against ~23 us through ``send_message``).  If the
kernel takes only part of it, the rest is kept and written before any other byte, so frames from
different writers never interleave.

The private members used: the connection's ping table (``_pings``), to notice the pong of a ping
we framed ourselves, and wsproto's spent handshake state, dropped once the WebSocket is open to keep
idle connections small; trio-websocket (0.12.2) and wsproto (1.3.2) are pinned and
``check_pinned_internals`` (run by the tests) fails if either changes.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import trio
import trio_websocket
import wsproto
import wsproto.handshake
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.utilities import LocalProtocolError

PINNED_VERSION = "0.12.2"
PINNED_WSPROTO = "1.3.2"


class TransportClosed(Exception):
    """The connection is closed or broken; nothing more can be written."""


class WriteGate(trio.abc.HalfCloseableStream):
    """Wraps the client's TCP stream: serializes every writer and offers a synchronous write."""

    __slots__ = ("stream", "_lock", "_pending", "_broken", "_closed", "_fd")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._lock = trio.StrictFIFOLock()
        self._pending: memoryview | bytes = b""
        """Bytes of a frame the fast path could write only in part; written before anything else."""
        self._broken = False
        self._closed = False
        """Set by ``aclose``: the descriptor number may already belong to another connection."""
        try:
            self._fd: int | None = stream.socket.fileno()
        except AttributeError:  # not a socket (e.g. a TLS stream): no fast path
            self._fd = None

    # -- the fast path ----------------------------------------------------------------------------

    @property
    def direct_write_possible(self) -> bool:
        """True when no other write is under way, so ``write_now`` may be used."""
        return self._fd is not None and not self._lock.locked() and not self._pending and not self._broken and not self._closed

    def write_now(self, data: bytes) -> None:
        """Write ``data`` without blocking (only when ``direct_write_possible``).  What the kernel
        does not take now is kept and written first by the next ``send_all`` (``needs_flush``)."""
        assert self._fd is not None
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError:  # reset, broken pipe: the next send_all reports it
            self._broken = True
            return
        if n < len(data):
            self._pending = memoryview(data)[n:]  # no copy of a large snapshot's remainder

    @property
    def needs_flush(self) -> bool:
        return bool(self._pending) or self._broken

    # -- trio.abc.Stream --------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._send_locked(data)

    async def send_unless(self, data: bytes, closed: Callable[[], bool]) -> None:
        """Write ``data`` unless ``closed()`` is true once it is our turn (a close frame written by
        trio-websocket must stay the last frame)."""
        async with self._lock:
            if closed():
                raise TransportClosed
            await self._send_locked(data)

    async def _send_locked(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken:
            raise trio.BrokenResourceError("the connection broke during a direct write")
        if self._pending:
            pending, self._pending = self._pending, b""
            await self.stream.send_all(pending)
        if data:
            await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        await self.stream.aclose()


class _SpentHandshake:
    """Stands where wsproto keeps its HTTP handshake (an h11 connection, ~2.5 KiB) once the
    WebSocket is open: after that wsproto only asks it for (no more) events."""

    __slots__ = ()

    def events(self) -> tuple[()]:
        return ()


_SPENT_HANDSHAKE = _SpentHandshake()


def release_handshake(ws: WebSocketConnection) -> bool:
    """Drop wsproto's handshake state of an accepted connection (it is never used again); True if
    dropped.  Kept when anything is still pending in it."""
    protocol = ws._wsproto
    handshake = protocol.handshake
    if protocol.connection is None or isinstance(handshake, _SpentHandshake) or handshake._events:
        return False
    protocol.handshake = _SPENT_HANDSHAKE  # type: ignore[assignment]
    return True


class _PongWaiter:
    """Stands in the connection's ping table where trio-websocket keeps ``trio.Event`` objects:
    it calls ``.set()`` on the waiter of a pong's payload and of every earlier ping."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def set(self) -> None:
        self._callback()


class WebSocketTransport:
    """One accepted trio-websocket connection and its gate, as the client connection uses them."""

    __slots__ = ("_ws", "gate")

    def __init__(self, ws: WebSocketConnection, gate: WriteGate) -> None:
        self._ws = ws
        self.gate = gate

    def _closed(self) -> bool:
        return self._ws.closed is not None

    async def receive(self) -> str | bytes:
        """The next whole message; raises TransportClosed once the connection is closed."""
        try:
            return await self._ws.get_message()
        except ConnectionClosed:
            raise TransportClosed from None

    @property
    def direct_write_possible(self) -> bool:
        """See :class:`WriteGate`; never after the connection started closing."""
        return self.gate.direct_write_possible and self._ws.closed is None

    async def write(self, data: bytes) -> None:
        """Write already-framed bytes (and any pending remainder first).  Cancelling it mid-write
        can leave a partial frame on the wire: the connection must be dropped then."""
        try:
            await self.gate.send_unless(data, self._closed)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed from None

    def expect_pong(self, payload: bytes, on_pong: Callable[[], None]) -> None:
        """Call ``on_pong`` when the pong for our ping ``payload`` (or for a later ping) arrives."""
        self._ws._pings[payload] = _PongWaiter(on_pong)  # type: ignore[assignment]

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame and wait for the peer's; the caller bounds the wait.

        wsproto can raise LocalProtocolError here when the peer's close crosses ours
        (trio-websocket issue #184); the connection is over either way."""
        try:
            await self._ws.aclose(code, reason)
        except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass


def check_pinned_internals() -> list[str]:
    """What this module relies on that the installed trio-websocket lacks (empty when all is there)."""
    problems = []
    if trio_websocket.__version__ != PINNED_VERSION:
        problems.append(f"trio-websocket {trio_websocket.__version__} installed, {PINNED_VERSION} pinned")
    if "_pings" not in WebSocketConnection.__init__.__code__.co_names:
        problems.append("WebSocketConnection no longer has a _pings table")
    if "_pings" not in WebSocketConnection._handle_pong_event.__code__.co_names:
        problems.append("pongs are no longer matched through _pings")
    if wsproto.__version__ != PINNED_WSPROTO:
        problems.append(f"wsproto {wsproto.__version__} installed, {PINNED_WSPROTO} pinned")
    if "handshake" not in inspect.getsource(wsproto.WSConnection.events):
        problems.append("wsproto's WSConnection.events no longer asks its handshake for events")
    if "_events" not in wsproto.handshake.H11Handshake.__init__.__code__.co_names:
        problems.append("wsproto's handshake no longer keeps pending events in _events")
    return problems
