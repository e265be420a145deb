"""The opening handshake (RFC 6455 section 4.2) on the socket: read the client's upgrade request,
let the daemon decide (path, Origin, credentials, limits), and answer ``101 Switching Protocols``
or an HTTP error with a short text body.

Reading and checking the request and writing the answers is :mod:`uipd.core.upgrade` (sans-IO);
this module reads the socket for it, negotiates permessage-deflate (:mod:`uipd.server.deflate`)
and builds the open connection's frame layer, a wsproto ``Connection``, directly: nothing of the
handshake is kept once the answer is written (:class:`uipd.server.transport.WebSocketTransport`).
On a plain socket the ``101`` is not written here: the connection writes it with its first frames
(``ConnectionWriter.open``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
from attrs import evolve
from wsproto.connection import Connection, ConnectionType

from uipd.core.admission import Refusal
from uipd.core.upgrade import MAX_REQUEST_BYTES, RequestReader, UpgradeRequest, accept_answer, refusal_answer
from uipd.server.deflate import DeflateExtension, client_declines
from uipd.server.deflate import shared as shared_deflate
from uipd.server.transport import WriteGate

__all__ = ["MAX_REQUEST_BYTES", "UpgradeRequest", "accept_upgrade", "open_handshake", "refuse_at_once"]

Admitted = TypeVar("Admitted")


async def open_handshake(
    gate: WriteGate, decide: Callable[[UpgradeRequest], Refusal | Admitted], *, inflate_limit: int | None = None
) -> tuple[UpgradeRequest, Admitted, Connection | None, bytes | None] | Refusal | None:
    """Run the handshake on ``gate``: when accepted, the request, what ``decide`` said of it,
    wsproto's frame layer for the open connection, and the ``101`` if it is still to be written
    (a plain socket: the caller writes it with the connection's first frames, so the client reads
    its whole opening at once; None: written here, on TLS); the refusal when the client was refused (it is
    written; the caller counts it), whoever refused it; None when the client went away.  The
    caller bounds the time it may take.

    ``inflate_limit``: compression is on (PROTOCOL.md section 9): a client offering
    permessage-deflate, and not declining it with ``?compress=0``, gets it, its compressed
    messages inflated up to that many bytes (``max_message_bytes``)."""
    reader = RequestReader()
    while True:
        data = await gate.receive_some()
        if not data:
            return None
        request = reader.feed(data)
        if request is not None:
            break
    if isinstance(request, Refusal):
        return await _refuse(gate, request)
    decision = decide(request)
    if isinstance(decision, Refusal):
        return await _refuse(gate, decision)
    deflate = None
    if inflate_limit is not None and request.offers and not client_declines(request.target):
        deflate = shared_deflate(inflate_limit)
    answer, connection, negotiated = accept_upgrade(request, deflate)
    if negotiated:
        request = evolve(request, deflate=True)
    if gate.has_fast_path:
        return request, decision, connection, answer
    await gate.send(answer)
    return request, decision, connection, None


def accept_upgrade(request: UpgradeRequest, deflate: DeflateExtension | None) -> tuple[bytes, Connection | None, bool]:
    """The 101 answering ``request``, the open connection's frame layer (None: a plain one, made
    by the transport when needed), and whether
    permessage-deflate was negotiated (``deflate``: it may be, with this extension object)."""
    if deflate is None:
        # No extension: the transport makes the frame layer when the client first sends a frame
        # it must parse (an idle client never does: its pongs need none).
        return accept_answer(request.headers["sec-websocket-key"]), None, False
    built: list[Connection] = []

    def answer() -> bytes:
        # RFC 7692 section 5: the offers in the client's order; the extension accepts the first it
        # can honour and declines the rest.
        accepted = None
        for offer in request.offers:
            if offer.split(";", 1)[0].strip() == deflate.name and (accepted := deflate.accept(offer)) is not None:
                break
        # Built inside the negotiation: wsproto keeps only the extensions enabled() at that moment.
        built.append(Connection(ConnectionType.SERVER, [deflate]))  # type: ignore[list-item]  # a duck-typed Extension
        return accept_answer(request.headers["sec-websocket-key"], None if accepted is None else f"{deflate.name}; {accepted}")

    data, negotiated = deflate.negotiate(answer)
    return data, built[0], negotiated


async def _refuse(gate: WriteGate, refusal: Refusal) -> Refusal:
    await gate.send(refusal_answer(refusal))
    return refusal


REFUSE_READ_WAIT = 0.5
"""Seconds ``refuse_at_once`` waits for the request's first bytes."""


async def refuse_at_once(gate: WriteGate, refusal: Refusal) -> None:
    """Answer ``refusal`` without parsing the request (the server is past its handshake bound:
    parsing is the cost it cannot take now).  The request's first bytes are read first, if they
    come within REFUSE_READ_WAIT: closing a socket with unread data resets it, and the client
    would lose the answer."""
    with trio.move_on_after(REFUSE_READ_WAIT):
        await gate.receive_some()
    await gate.send(refusal_answer(refusal))
