"""uipd.core.upgrade: the opening handshake's request read and checked (RFC 6455 4.2.1, strict
HTTP/1.1 for what an upgrade may be), and its answers, checked against wsproto's client."""

from __future__ import annotations

import time

import pytest
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import H11Handshake

from uipd.core.admission import BAD_REQUEST, DUPLICATE_HEADER, NOT_FOUND, OVERLOADED, REQUEST_TOO_LARGE, UNSUPPORTED_VERSION
from uipd.core.upgrade import MAX_REQUEST_BYTES, RequestReader, UpgradeRequest, accept_answer, accept_token, refusal_answer

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
LINES = (
    "Host: 127.0.0.1:5000",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
)


def request(*extra: str, drop: tuple[str, ...] = (), first: str = "GET /ws?topics=a HTTP/1.1") -> bytes:
    lines = [line for line in LINES if not line.startswith(drop)]
    return ("\r\n".join([first, *lines, *extra]) + "\r\n\r\n").encode("latin-1")


def read(data: bytes) -> UpgradeRequest:
    result = RequestReader().feed(data)
    assert isinstance(result, UpgradeRequest), result
    return result


def test_a_browser_request_is_read_with_its_headers_offers_and_trailing_frames():
    frame = b"\x81\x85\x00\x00\x00\x00hello"
    got = read(
        request(
            "Origin: http://localhost:3000",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame",
            "Sec-WebSocket-Protocol: chat",
            "X-Note:   spaced value \t",
        )
        + frame
    )
    assert got.target == "/ws?topics=a"
    assert got.headers == {
        "upgrade": "websocket", "connection": "Upgrade", "sec-websocket-key": KEY, "sec-websocket-version": "13",
        "origin": "http://localhost:3000", "x-note": "spaced value",
    }  # Host, the offers and the ignored subprotocols are not among them
    assert got.offers == ("permessage-deflate; client_max_window_bits", "x-webkit-deflate-frame")
    assert got.trailing_data == frame
    assert not got.deflate


def test_a_request_fed_byte_by_byte_is_read_once_complete():
    data = b"\r\n" + request("Sec-WebSocket-Extensions: permessage-deflate") + b"\x88\x80"
    reader = RequestReader()
    results = [reader.feed(data[i : i + 1]) for i in range(len(data) - 2)]
    assert results[:-1] == [None] * (len(results) - 1)  # also across the CRLFs that end the head
    assert isinstance(results[-1], UpgradeRequest)
    assert results[-1].offers == ("permessage-deflate",)
    assert read(data).trailing_data == b"\x88\x80"


def test_repeated_list_headers_are_one_list_and_connection_is_a_token_list():
    got = read(
        request(
            "Connection: keep-alive",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10",
            "Connection: Upgrade",
            "Sec-WebSocket-Extensions: permessage-deflate",
            drop=("Connection",),
        )
    )
    assert got.offers == ("permessage-deflate; server_max_window_bits=10", "permessage-deflate")
    assert got.headers["connection"] == "keep-alive, Upgrade"
    for connection in ("keep-alive, Upgrade", "UPGRADE", "upgrade,keep-alive"):
        read(request(f"Connection: {connection}", drop=("Connection",)))
    read(request("upgrade: WebSocket", "host: x", drop=("Upgrade", "Host")))  # names and the token in any case
    read(request("Content-Length: 0", "X-Latin: caf\xe9"))  # an empty body; obs-text in a value


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (request(first="POST / HTTP/1.1"), BAD_REQUEST),
        (request(first="get / HTTP/1.1"), BAD_REQUEST),
        (request(first="GET / HTTP/1.0"), BAD_REQUEST),
        (request(first="GET / HTTP/2.0"), BAD_REQUEST),
        (request(first="GET  / HTTP/1.1"), BAD_REQUEST),
        (request(first="GET / HTTP/1.1 "), BAD_REQUEST),
        (request(first="GET /\x7f HTTP/1.1"), BAD_REQUEST),
        (request(drop=("Host",)), BAD_REQUEST),
        (request("Host: other.example"), BAD_REQUEST),
        (request(drop=("Upgrade",)), BAD_REQUEST),
        (request("Upgrade: h2c", drop=("Upgrade",)), BAD_REQUEST),
        (request("Upgrade: websocket, h2c", drop=("Upgrade",)), BAD_REQUEST),
        (request(drop=("Connection",)), BAD_REQUEST),
        (request("Connection: keep-alive", drop=("Connection",)), BAD_REQUEST),
        (request("Connection: upgraded", drop=("Connection",)), BAD_REQUEST),
        (request(drop=("Sec-WebSocket-Version",)), BAD_REQUEST),
        (request("Sec-WebSocket-Version:", drop=("Sec-WebSocket-Version",)), BAD_REQUEST),
        (request("Sec-WebSocket-Version: 8", drop=("Sec-WebSocket-Version",)), UNSUPPORTED_VERSION),
        (request("Sec-WebSocket-Version: 13, 8", drop=("Sec-WebSocket-Version",)), UNSUPPORTED_VERSION),
        (request(drop=("Sec-WebSocket-Key",)), BAD_REQUEST),
        (request("Sec-WebSocket-Key: short", drop=("Sec-WebSocket-Key",)), BAD_REQUEST),
        (request("Sec-WebSocket-Key: not base64 at all!!", drop=("Sec-WebSocket-Key",)), BAD_REQUEST),
        (request("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEBES", drop=("Sec-WebSocket-Key",)), BAD_REQUEST),  # 18 bytes
        (request("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="), DUPLICATE_HEADER),
        (request(f"Sec-WebSocket-Key: {KEY}"), DUPLICATE_HEADER),
        (request("Sec-WebSocket-Version: 13"), DUPLICATE_HEADER),
        (request("Upgrade: websocket"), DUPLICATE_HEADER),
        (request("Origin: https://a.example", "Origin: https://b.example"), DUPLICATE_HEADER),
        (request("Authorization: Bearer a", "authorization: Bearer b"), DUPLICATE_HEADER),
        (request("X-Folded: one", " two"), BAD_REQUEST),  # obs-fold
        (request("X-Folded: one", "\ttwo"), BAD_REQUEST),
        (request("X-Space : v"), BAD_REQUEST),
        (request(": no name"), BAD_REQUEST),
        (request("No colon"), BAD_REQUEST),
        (request("X-(paren): v"), BAD_REQUEST),
        (request("X-Nul: a\x00b"), BAD_REQUEST),
        (request("X-Cr: a\rb"), BAD_REQUEST),
        (request("X-Lf: a\nb"), BAD_REQUEST),  # a bare LF inside the head
        (request("X-Del: a\x7fb"), BAD_REQUEST),
        (request("Content-Length: 5"), BAD_REQUEST),
        (request("Transfer-Encoding: chunked"), BAD_REQUEST),
    ],
)
def test_what_an_upgrade_may_not_be_is_refused(data, refusal):
    assert RequestReader().feed(data) == refusal


@pytest.mark.parametrize(
    "start",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"POST /api/publish HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n", b"G\x00"],
)
def test_what_cannot_begin_an_upgrade_is_refused_without_waiting_for_the_head(start):
    """TLS on the plain port, another method: refused from the first bytes (no wait for a head
    that may never end, nor for the handshake timeout)."""
    assert RequestReader().feed(start) == BAD_REQUEST
    reader = RequestReader()
    assert reader.feed(b"GE") is None  # a prefix of GET is given time
    assert reader.feed(b"T / HTTP/1.1\r\n") is None


def test_a_head_ended_by_bare_line_feeds_is_refused_at_once():
    assert RequestReader().feed(request().replace(b"\r\n", b"\n")) == BAD_REQUEST


def test_a_head_over_max_request_bytes_is_refused_complete_or_not():
    pad = "X-Pad: " + "a" * MAX_REQUEST_BYTES
    assert RequestReader().feed(request(pad)) == REQUEST_TOO_LARGE
    reader = RequestReader()
    data = request(pad)
    results = [reader.feed(data[i : i + 4096]) for i in range(0, MAX_REQUEST_BYTES + 4096, 4096)]
    assert results[-1] == REQUEST_TOO_LARGE and set(results[:-1]) == {None}  # not waiting for the end
    # A head under the bound is read even when trailing frames make the bytes read larger.
    assert read(request("X-Pad: " + "a" * 16_000) + b"\x81\x80\x00\x00\x00\x00" * 1000).target == "/ws?topics=a"


def test_a_hostile_line_is_refused_in_linear_time():
    """A value of thousands of spaces then a control character: a backtracking pattern would
    take seconds on it (each space tried as the value's start)."""
    for line in ("X-Pad: " + " " * 15_000 + "\x01", "X-Pad:" + "\t " * 7_000 + "x\x00", "X" * 15_000 + "\x01: v"):
        started = time.perf_counter()
        assert RequestReader().feed(request(line)) == BAD_REQUEST
        assert time.perf_counter() - started < 0.5


def test_accept_token_is_rfc_6455s_example():
    assert accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


@pytest.mark.parametrize("extensions", [None, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"])
def test_the_101_completes_wsprotos_client_handshake(extensions):
    """A real client's request read here, answered here, and the answer taken by that client."""
    client = H11Handshake(ConnectionType.CLIENT)
    offer = [] if extensions is None else [PerMessageDeflate(client_max_window_bits=15)]
    data = client.send(Request(host="example.com", target="/ws?since=x", extensions=offer))
    got = read(data)
    assert got.target == "/ws?since=x"
    assert len(got.offers) == len(offer)
    client.receive_data(accept_answer(got.headers["sec-websocket-key"], extensions))
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection), events
    if extensions is not None:
        assert accept_answer(KEY, extensions).endswith(b"\r\nSec-WebSocket-Extensions: " + extensions.encode() + b"\r\n\r\n")


def test_a_refusal_is_a_whole_http_answer():
    client = H11Handshake(ConnectionType.CLIENT)
    client.send(Request(host="example.com", target="/"))
    client.receive_data(refusal_answer(NOT_FOUND))
    events = list(client.events())
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 404
    assert b"".join(e.data for e in events[1:] if isinstance(e, RejectData)) == b"not found\n"
    assert dict(events[0].headers)[b"connection"] == b"close"

    version = refusal_answer(UNSUPPORTED_VERSION)
    assert version.startswith(b"HTTP/1.1 426 Upgrade Required\r\n") and b"\r\nSec-WebSocket-Version: 13\r\n" in version
    busy = refusal_answer(OVERLOADED.retry_later(3))
    assert busy.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"\r\nRetry-After: 3\r\n" in busy
    assert busy.endswith(b"\r\n\r\noverloaded\n")
    assert b"Retry-After" not in refusal_answer(BAD_REQUEST) and b"Sec-WebSocket-Version" not in refusal_answer(BAD_REQUEST)
