"""The opening handshake's HTTP, sans-IO (RFC 6455 section 4.2): the client's upgrade request
read and checked, and the answers to it (``101 Switching Protocols`` or a refusal).

Only what an upgrade request may be is parsed, and strictly: ``GET <target> HTTP/1.1``, header
lines of a token, a colon and a value of visible characters (obs-fold, a bare LF or a control
character is a 400), no body.  A general HTTP/1.1 parser (h11 through wsproto's handshake) cost
~1 ms per connection on a loaded box, the largest part of a connection storm; this one reads the
head once, with one regex match per line.  Every refusal is a
:class:`~uipd.core.admission.Refusal` (which status, which reason); the shell
(:mod:`uipd.server.handshake`) reads the socket, writes the answer and builds the frame layer.
"""

from __future__ import annotations

import base64
import hashlib
import re

from attrs import frozen

from uipd.core.admission import BAD_REQUEST, DUPLICATE_HEADER, REQUEST_TOO_LARGE, UNSUPPORTED_VERSION, Refusal, valid_key

MAX_REQUEST_BYTES = 16 * 1024
"""A longer request head is refused with 400 ``request_too_large`` (h11's own bound for a head)."""

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: appended to the client's key before hashing it into the accept."""

UNIQUE_HEADERS = frozenset({"sec-websocket-key", "sec-websocket-version", "origin", "upgrade", "authorization"})
"""Request headers that must appear once (RFC 6455 11.3.1, 11.3.5; RFC 6454 7.3 for Origin): a
repeated one is refused 400 ``duplicate_header``.  Parsers read a repeated one differently
(wsproto joined two keys into one value, whose accept matched neither; a dict keeps the last
Origin, so ``evil`` then ``good`` would pass the allow-list).  Upgrade is a list header in HTTP,
but RFC 6455 asks for one ``websocket`` value.  Host must appear once too (RFC 7230 5.4), refused
as a plain ``bad_request``."""

_HEAD = re.compile(r"GET ([\x21-\x7e]+) HTTP/1\.1((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)*+)")
"""A request head (decoded as Latin-1) that an upgrade may be, in one match (RFC 7230 3.1.1,
3.2): ``GET`` (RFC 6455 4.1), a target of visible ASCII, HTTP/1.1 exactly (1.0 has no upgrade);
then header lines, each a token, a colon and a value of visible characters, spaces, tabs and
obs-text.  A line starting with whitespace (obs-fold, RFC 7230 3.2.4: "reject with 400"), a
space before the colon, a bare CR or LF or another control character does not match.  No part
can match the same characters two ways, so a head that does not match fails in linear time."""

_LIST_HEADERS = frozenset({"connection", "sec-websocket-extensions"})
"""Headers whose repeated lines are one comma-separated list (RFC 7230 3.2.2): joined."""

_STATUS_TEXT = {
    101: "Switching Protocols", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    426: "Upgrade Required", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


@frozen
class UpgradeRequest:
    """A client's upgrade request that passed every check of RFC 6455 4.2.1 (the daemon's own,
    path, Origin, credentials and limits, come after: :mod:`uipd.core.admission`)."""

    target: str
    """Path and query, as sent."""
    headers: dict[str, str]
    """By lower-case name, values decoded as Latin-1 (the last one of a repeated list header).
    Host and the Sec-WebSocket-Extensions and -Protocol headers are not among them."""
    trailing_data: bytes
    """Bytes the client sent behind its request (frames it did not wait to send)."""
    offers: tuple[str, ...] = ()
    """The Sec-WebSocket-Extensions offers in the client's order, each ``name; params``."""
    deflate: bool = False
    """permessage-deflate was negotiated (set once the 101 is written)."""


class RequestReader:
    """Collects the bytes of one request head as they arrive (``feed``), and reads the request
    once the head is complete.  Each byte is searched once for the head's end (a client that
    trickles its request costs no rescans)."""

    __slots__ = ("_buffer", "_scanned")

    def __init__(self) -> None:
        self._buffer = b""
        self._scanned = 0
        """Bytes of the buffer known not to end the head (less the 3 that could begin its end)."""

    def feed(self, data: bytes) -> UpgradeRequest | Refusal | None:
        """The request, once ``data`` completes its head; its refusal; None: more bytes are needed."""
        buffer = self._buffer + data if self._buffer else data
        if buffer[:1] in (b"\r", b"\n"):  # RFC 7230 3.5: empty lines before a request are ignored
            buffer = buffer.lstrip(b"\r\n")
            self._scanned = 0
        end = buffer.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            if len(buffer) > MAX_REQUEST_BYTES:
                return REQUEST_TOO_LARGE
            if not (buffer.startswith(b"GET ") if len(buffer) >= 4 else b"GET ".startswith(buffer)):
                return BAD_REQUEST  # TLS on the plain port, another method: no need to wait for the rest
            if buffer.find(b"\n\n", self._scanned) >= 0:
                return BAD_REQUEST  # a head ended by bare LFs: it would never end the strict way
            self._buffer, self._scanned = buffer, max(0, len(buffer) - 3)
            return None
        self._buffer = b""
        if end > MAX_REQUEST_BYTES:
            return REQUEST_TOO_LARGE
        return parse_request(buffer[:end], buffer[end + 4 :])


def parse_request(head: bytes, trailing_data: bytes = b"") -> UpgradeRequest | Refusal:
    """Check a request head (without its final empty line) as RFC 6455 4.2.1 asks: the request
    line, the header lines, one Host, ``Upgrade: websocket``, ``Connection: upgrade`` (a token
    among others), ``Sec-WebSocket-Version: 13`` (else 426), a key of 16 base64-encoded bytes,
    and no body."""
    matched = _HEAD.fullmatch(head.decode("latin-1"))
    if matched is None:
        return BAD_REQUEST
    target, lines = matched.groups()
    headers: dict[str, str] = {}
    for line in lines.split("\r\n")[1:]:  # the lines part begins with a CRLF
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name in UNIQUE_HEADERS:
                return DUPLICATE_HEADER
            if name == "host":
                return BAD_REQUEST
            if name in _LIST_HEADERS:
                value = f"{headers[name]}, {value}"
        headers[name] = value
    if headers.pop("host", None) is None:
        return BAD_REQUEST
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        # No body: bytes after the head are the client's first frames (a framing header saying
        # otherwise is how requests are smuggled past a proxy).
        return BAD_REQUEST
    connection = headers.get("connection", "").lower()
    if connection != "upgrade" and "upgrade" not in [token.strip() for token in connection.split(",")]:
        return BAD_REQUEST
    version = headers.get("sec-websocket-version")
    if version != "13":
        return UNSUPPORTED_VERSION if version else BAD_REQUEST
    if headers.get("upgrade", "").lower() != "websocket" or not valid_key(headers.get("sec-websocket-key")):
        return BAD_REQUEST
    headers.pop("sec-websocket-protocol", None)  # no subprotocol is spoken: never answered
    offers = headers.pop("sec-websocket-extensions", None)
    return UpgradeRequest(target, headers, trailing_data, () if offers is None else tuple([o.strip() for o in offers.split(",")]))


def accept_token(key: str) -> bytes:
    """RFC 6455 4.2.2: the Sec-WebSocket-Accept answering ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + ACCEPT_GUID).digest())


def accept_answer(key: str, extensions: str | None = None) -> bytes:
    """The 101 answering a request with ``key``; ``extensions``: the Sec-WebSocket-Extensions
    answer (the extensions accepted), if any."""
    extension_line = b"" if extensions is None else b"Sec-WebSocket-Extensions: %s\r\n" % extensions.encode("ascii")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
        % (accept_token(key), extension_line)
    )


def refusal_answer(refusal: Refusal) -> bytes:
    """The whole HTTP answer refusing a handshake: the status, a short text body, Retry-After
    when the refusal has one, the version we speak with a 426 (RFC 6455 4.4), and
    ``Connection: close`` (the connection is closed once it is written)."""
    body = refusal.body
    extra = b"Sec-WebSocket-Version: 13\r\n" if refusal.status == UNSUPPORTED_VERSION.status else b""
    if refusal.retry_after is not None:
        extra += b"Retry-After: %d\r\n" % refusal.retry_after
    return b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        refusal.status, _STATUS_TEXT.get(refusal.status, "Error").encode("ascii"), extra, len(body), body,
    )
