"""Every WebSocket close uipd sends: its code and its reason (docs/protocol.md section 5 and
"Additions in uipd").  One place, so that a newcomer finds what a client can be told, the metrics
know which codes to report as themselves, and no code is written as a bare number elsewhere.

A reason is at most 123 bytes of UTF-8 (RFC 6455 5.5: a close frame's payload is the 2-byte code
and the reason, 125 bytes in all); ``tests/core/test_closecodes.py`` checks it.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Close:
    """A close uipd decides: the code and the reason its close frame carries."""

    code: int
    reason: str


NORMAL = 1000
"""A peer's ordinary close (we echo the peer's code)."""
ABNORMAL = 1006
"""Never sent (RFC 6455 7.4.1): counted for a connection that ended without a close frame."""

GOING_AWAY = Close(code=1001, reason="going away")
"""The daemon is draining (SIGTERM): every client, after its queued frames."""
PROTOCOL_ERROR = Close(code=1002, reason="protocol error")
"""A frame broke RFC 6455.  The frame layer names the code (1002, or 1007 for invalid UTF-8) and
often a reason; this reason is used when it gives none."""
INVALID_DATA = Close(code=1007, reason=PROTOCOL_ERROR.reason)
"""A text frame that is not UTF-8 (the frame layer's code; handled as :data:`PROTOCOL_ERROR`)."""
BINARY = Close(code=1003, reason="binary frames are not supported")
"""A binary message, at its first bytes: it is never read to its end."""
RATE_LIMITED = Close(code=1008, reason="rate limit exceeded")
"""Frames past the rate limit and its strikes."""
MESSAGE_TOO_BIG = Close(code=1009, reason="message too big")
"""A message (all its fragments) over ``max_message_bytes``."""
TOO_MANY_FRAGMENTS = Close(code=1009, reason="message in too many fragments")
"""A message in more than ``max_fragments`` frames."""
INTERNAL_ERROR = Close(code=1011, reason="internal error")
"""A session uipd cannot go on serving (a bug left it without a connection)."""
TOKEN_EXPIRED = Close(code=4001, reason="token expired")
"""The connection's credentials (a JWT's ``exp``) ran out."""
SLOW_CONSUMER = Close(code=4008, reason="slow consumer")
"""The client fell behind and what it was due could not be dropped (``slow_consumer``
"disconnect", or an ALERT or reply that did not fit even after a resync)."""

SENT = (GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, BINARY, RATE_LIMITED, MESSAGE_TOO_BIG, TOO_MANY_FRAGMENTS, INTERNAL_ERROR, TOKEN_EXPIRED, SLOW_CONSUMER)
"""Every close uipd decides."""
KNOWN_CODES = frozenset({NORMAL, ABNORMAL} | {close.code for close in SENT})
"""Codes the metrics report as themselves; a peer's other codes are counted as ``other`` (their
label values stay a fixed set)."""
