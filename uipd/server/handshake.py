"""The opening handshake (RFC 6455 section 4.2), on wsproto's sans-IO HTTP/1.1 handshake.

Read the client's upgrade request, let the daemon decide (path, Origin, credentials, limits), and
answer ``101 Switching Protocols`` or an HTTP error with a short text body.  The handshake state
(an h11 connection) is dropped as soon as the answer is written: an open connection keeps only
wsproto's frame layer (:class:`uipd.server.transport.WebSocketTransport`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from attrs import frozen
from wsproto.connection import Connection, ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from uipd.core.admission import BAD_REQUEST, REQUEST_TOO_LARGE, UNSUPPORTED_VERSION, Refusal, request_headers
from uipd.server.transport import WriteGate

MAX_REQUEST_BYTES = 16 * 1024
"""A longer request head is refused with 400 (h11's own bound for a head)."""


@frozen
class UpgradeRequest:
    target: str
    """Path and query, as sent."""
    headers: dict[str, str]
    """Header names in lower case (Host and the Sec-WebSocket-Extensions/-Protocol offers are
    not among them: wsproto consumes those)."""
    trailing_data: bytes
    """Bytes the client sent behind its request (frames it did not wait to send)."""


Admitted = TypeVar("Admitted")


async def open_handshake(
    gate: WriteGate, decide: Callable[[UpgradeRequest], Refusal | Admitted]
) -> tuple[UpgradeRequest, Admitted, Connection] | Refusal | None:
    """Run the handshake on ``gate``: when accepted, the request, what ``decide`` said of it, and
    wsproto's frame layer for the open connection; the refusal when the client was refused (it is
    written; the caller counts it), whoever refused it; None when the client went away.  The
    caller bounds the time it may take."""
    handshake = H11Handshake(ConnectionType.SERVER)
    raw = bytearray()
    while True:
        data = await gate.receive_some()
        if not data:
            return None
        raw += data
        try:
            handshake.receive_data(data)
            request = next((e for e in handshake.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:  # not a WebSocket upgrade: wsproto says which status
            hint = exc.event_hint if isinstance(exc.event_hint, RejectConnection) else RejectConnection()
            refusal = UNSUPPORTED_VERSION if hint.status_code == UNSUPPORTED_VERSION.status else BAD_REQUEST
            return await _refuse(gate, handshake, refusal, list(hint.headers))
        if request is not None:
            break
        if len(raw) > MAX_REQUEST_BYTES:  # h11 refuses this too; do not wait for it
            return await _refuse(gate, handshake, REQUEST_TOO_LARGE)
    head, _, trailing = bytes(raw).lstrip(b"\r\n").partition(b"\r\n\r\n")
    if len(head) > MAX_REQUEST_BYTES:  # h11 bounds only a head still incomplete after a read
        return await _refuse(gate, handshake, REQUEST_TOO_LARGE)
    if not head.split(b"\r\n", 1)[0].endswith(b" HTTP/1.1"):
        # RFC 6455 4.1: the upgrade is an HTTP/1.1 request (h11 also parses 1.0).
        return await _refuse(gate, handshake, BAD_REQUEST)
    headers = request_headers(request.extra_headers)
    if isinstance(headers, Refusal):
        return await _refuse(gate, handshake, headers)
    upgrade = UpgradeRequest(request.target, headers, trailing)
    decision = decide(upgrade)
    if isinstance(decision, Refusal):
        return await _refuse(gate, handshake, decision)
    await gate.send(handshake.send(AcceptConnection()))
    connection = handshake.connection
    assert connection is not None  # set by the accept
    return upgrade, decision, connection


async def _refuse(gate: WriteGate, handshake: H11Handshake, refusal: Refusal, headers: list[tuple[bytes, bytes]] | None = None) -> Refusal:
    body = refusal.body
    headers = [*(headers or []), (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    data = handshake.send(RejectConnection(status_code=refusal.status, headers=headers, has_body=True))
    data += handshake.send(RejectData(data=body, body_finished=True))
    await gate.send(data)
    return refusal
