"""Whether a WebSocket handshake is accepted: path, shutdown, Origin, and connection limits.

Credentials are checked by :mod:`uipd.runtime.auth` (which needs the clock and PyJWT); this module takes
the rest of the decision and says which HTTP status refuses the handshake, and why.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from attrs import frozen


@frozen
class Refusal:
    status: int
    reason: str
    """A short key (``bad_request``, ``unsupported_version``, ``request_too_large``,
    ``duplicate_header``, ``not_found``, ``shutting_down``, ``forbidden_origin``,
    ``unauthorized``, ``too_many_clients``, ``too_many_per_ip``, ``bad_query``, ``forbidden_topic``,
    ``overloaded``, ``internal_error``), used for logs and metrics."""
    retry_after: int | None = None
    """Seconds for a ``Retry-After`` header (the 503s: see ``retry_later``)."""

    def retry_later(self, seconds: int) -> Refusal:
        """This refusal with ``Retry-After: seconds`` when it is a 503 (the server is busy or
        going away, the client is not wrong); any other as it is."""
        return Refusal(self.status, self.reason, seconds) if self.status == 503 else self

    @property
    def body(self) -> bytes:
        return self.reason.replace("_", " ").encode() + b"\n"


BAD_REQUEST = Refusal(400, "bad_request")
UNSUPPORTED_VERSION = Refusal(426, "unsupported_version")
"""A Sec-WebSocket-Version other than 13 (answered with the version we speak)."""
REQUEST_TOO_LARGE = Refusal(400, "request_too_large")
DUPLICATE_HEADER = Refusal(400, "duplicate_header")
NOT_FOUND = Refusal(404, "not_found")
SHUTTING_DOWN = Refusal(503, "shutting_down")
FORBIDDEN_ORIGIN = Refusal(403, "forbidden_origin")
UNAUTHORIZED = Refusal(401, "unauthorized")
TOO_MANY_CLIENTS = Refusal(503, "too_many_clients")
TOO_MANY_PER_IP = Refusal(429, "too_many_per_ip")
OVERLOADED = Refusal(503, "overloaded")
"""More handshakes in progress than ``[server] max_handshakes``: answered at once."""
BAD_QUERY = Refusal(400, "bad_query")
"""``?topics=`` or ``?since=`` malformed or naming an unknown topic (uipd.core.recovery)."""
FORBIDDEN_TOPIC = Refusal(403, "forbidden_topic")
"""``?topics=`` outside the client's JWT ``topics`` claim."""
INTERNAL_ERROR = Refusal(500, "internal_error")
"""An accepted handshake whose session could not be made (a bug, logged): written instead of the 101."""


def valid_key(key: str | None) -> bool:
    """RFC 6455 4.2.1: Sec-WebSocket-Key is base64 of 16 bytes."""
    if key is None:
        return False
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def check_handshake(
    *,
    key: str | None = "dGhlIHNhbXBsZSBub25jZQ==",
    path: str,
    origin: str | None,
    accepting: bool,
    paths: Sequence[str],
    allowed_origins: Sequence[str],
    clients: int,
    max_clients: int,
    clients_from_ip: int,
    max_per_ip: int,
) -> Refusal | None:
    """The refusal for a handshake, or None when nothing but its credentials stands in the way."""
    if not valid_key(key):
        return BAD_REQUEST
    if not accepting:
        return SHUTTING_DOWN
    if path.split("?", 1)[0] not in paths:
        return NOT_FOUND
    if allowed_origins and origin is not None and origin not in allowed_origins:
        return FORBIDDEN_ORIGIN
    if clients >= max_clients:
        return TOO_MANY_CLIENTS
    if max_per_ip and clients_from_ip >= max_per_ip:
        return TOO_MANY_PER_IP
    return None
