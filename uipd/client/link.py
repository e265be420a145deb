"""One WebSocket link of :mod:`uipd.client`: wsproto's sans-IO client over a trio stream (TCP, or
TLS for ``wss://``), offering permessage-deflate (PROTOCOL.md section 9).

trio-websocket, which the client used before, builds its handshake request inside
``connect_websocket`` with no way to offer an extension (an extra header makes wsproto's client
reject the answer), so the client drives wsproto itself: the handshake, text messages in both
directions, pongs, and the closing handshake; nothing else is needed by :class:`UipdClient`.

The link's compressor is wsproto's ``PerMessageDeflate`` (one per link: a client has one link);
inflating is bounded by the largest message the link takes, so a server cannot blow it up.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, RejectData, Request, TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

RECEIVE_BYTES = 64 * 1024
MAX_REJECT_BODY = 16 * 1024
"""The body of an HTTP refusal is read this far (the status is what matters), then dropped."""


class HandshakeFailed(Exception):
    """The server's answer was not a WebSocket handshake (or the stream ended before it)."""


class HandshakeTimeout(HandshakeFailed):
    """No connection and handshake within the connect timeout."""


class Rejected(Exception):
    """The server answered the handshake with an HTTP error status."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Closed(Exception):
    """The link is closed: by the server's close frame (its code and reason), 1006 when the stream
    ended without one, 1009 when a message was larger than the link takes."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code, self.reason = int(code), reason


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with inflating bounded per message: past ``limit`` bytes the
    link is closed 1009 instead of inflating on (wsproto itself inflates without a bound)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        out = super().frame_inbound_payload_data(proto, data)
        if isinstance(out, CloseReason):
            return out
        self._inflated += len(out)
        return CloseReason.MESSAGE_TOO_BIG if self._inflated > self.limit else out

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        out = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return out


class Link:
    """An open link. One task reads (:meth:`get_message`); any task may send."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, *, compressed: bool, max_message_size: int) -> None:
        self._stream, self._ws = stream, ws
        self.compressed = compressed
        """permessage-deflate was negotiated."""
        self._max = max_message_size
        self._send_lock = trio.Lock()  # one send_all at a time on a trio stream
        self._closed: Closed | None = None

    async def send_message(self, text: str) -> None:
        """Raises :class:`Closed` when the link is closed."""
        if self._closed is not None or self._ws.state is not ConnectionState.OPEN:
            raise self._closed or Closed(1006, "closed")
        await self._write(TextMessage(data=text))

    async def get_message(self) -> str | bytes:
        """The next whole message (a text one as ``str``); raises :class:`Closed` when the link closes."""
        parts: list[str | bytes] = []
        size = 0
        while True:
            if self._closed is not None:
                raise self._closed
            # wsproto parses frames lazily: leaving this loop early keeps the rest buffered.
            for event in self._ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    parts.append(event.data)
                    size += len(event.data)
                    if size > self._max:
                        raise await self._close_with(Closed(CloseReason.MESSAGE_TOO_BIG, "message too big"), reply=CloseReason.MESSAGE_TOO_BIG)
                    if event.message_finished:
                        return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    await self._write(event.response())
                elif isinstance(event, CloseConnection):
                    raise await self._close_with(Closed(event.code, event.reason or ""), reply=event)
            await self._receive()

    async def aclose(self, code: int = 1000, timeout: float = 1.0) -> None:
        """The closing handshake (our close frame, then the server's, at most ``timeout`` seconds),
        then the stream; shielded, so that it also runs for a cancelled client."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout):
                if self._closed is None and self._ws.state is ConnectionState.OPEN:
                    self._closed = Closed(code, "closed by the client")
                    try:
                        await self._write(CloseConnection(code=code))
                        while True:
                            for _ in self._ws.events():
                                pass  # what arrives before the server's close frame is dropped
                            if self._ws.state is ConnectionState.CLOSED:
                                break
                            await self._receive()
                    except (Closed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
            with trio.move_on_after(timeout) as scope:
                await self._stream.aclose()
            if scope.cancelled_caught:  # a TLS peer that does not answer close_notify
                await trio.aclose_forcefully(self._stream)

    async def _receive(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, OSError) as exc:
            self._closed = Closed(CloseReason.ABNORMAL_CLOSURE, f"{type(exc).__name__}: {exc}")
            raise self._closed from exc
        self._ws.receive_data(data or None)  # b"": the stream ended (wsproto makes it a 1006 close)

    async def _write(self, event: TextMessage | CloseConnection | object) -> None:
        # Framed under the lock: the bytes go out in the order the compressor made them.
        async with self._send_lock:
            try:
                data = self._ws.send(event)  # type: ignore[arg-type]
            except LocalProtocolError as exc:  # the link closed meanwhile
                raise self._closed or Closed(1006, "closed") from exc
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._closed = self._closed or Closed(CloseReason.ABNORMAL_CLOSURE, f"{type(exc).__name__}: {exc}")
                raise self._closed from exc

    async def _close_with(self, closed: Closed, *, reply: CloseConnection | int) -> Closed:
        """Record why the link closed and answer the close (or send ours) when it can still be
        sent; returns ``closed``, to raise."""
        self._closed = closed
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            with trio.move_on_after(1.0):
                try:
                    await self._write(reply.response() if isinstance(reply, CloseConnection) else CloseConnection(code=reply))
                except Closed:
                    pass
        return closed


async def _handshake(stream: trio.abc.Stream, host: str, target: str, *, compress: bool, max_message_size: int) -> Link:
    ws = WSConnection(ConnectionType.CLIENT)
    extensions = [BoundedDeflate(max_message_size)] if compress else []
    await stream.send_all(ws.send(Request(host=host, target=target, extensions=extensions)))
    status: int | None = None
    body = 0
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        try:
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    compressed = any(isinstance(e, PerMessageDeflate) for e in event.extensions)
                    # Frames behind the 101 stay in wsproto's buffer: the first get_message has them.
                    return Link(stream, ws, compressed=compressed, max_message_size=max_message_size)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status)
                elif isinstance(event, RejectData):
                    body += len(event.data)
                    if event.body_finished or body > MAX_REJECT_BODY:
                        raise Rejected(status or 0)
        except RemoteProtocolError as exc:
            raise HandshakeFailed(f"not a WebSocket handshake answer: {exc}") from exc
        if not data:
            if status is not None:
                raise Rejected(status)
            raise HandshakeFailed("the connection closed during the handshake")


def _endpoint(url: str) -> tuple[str, int, str, str, bool]:
    """(host to connect to, port, Host header, request target, TLS) of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url}: not a ws:// or wss:// URL")
    tls = parts.scheme == "wss"
    default = 443 if tls else 80
    port = parts.port or default
    host = parts.hostname
    header = f"[{host}]" if ":" in host else host
    if port != default:
        header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, header, target, tls


@asynccontextmanager
async def open_link(
    url: str, *, compress: bool = True, connect_timeout: float = 10.0, max_message_size: int = 64 * 1024 * 1024,
    close_timeout: float = 1.0, ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Link]:
    """An open :class:`Link` to ``url`` for the body; closed (closing handshake) on exit.
    Raises :class:`Rejected`, :class:`HandshakeFailed` (:class:`HandshakeTimeout`) or the
    ``OSError`` of a failed connect."""
    host, port, header, target, tls = _endpoint(url)
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream
            if tls:
                stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=ssl_context or ssl.create_default_context(), https_compatible=True)
            else:
                stream = await trio.open_tcp_stream(host, port)
            try:
                link = await _handshake(stream, header, target, compress=compress, max_message_size=max_message_size)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError as exc:
        raise HandshakeTimeout(f"no handshake within {connect_timeout:g} s") from exc
    try:
        yield link
    finally:
        await link.aclose(timeout=close_timeout)
