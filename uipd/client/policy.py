"""When to reconnect and how long to wait: the same rules as the browser client
(clients/js/src/policy.js and backoff.js)."""

from __future__ import annotations

import random
import re

from uipd.core.backoff import Backoff

_AUTH_REASON = re.compile(r"auth|token|credential|forbidden|unauthori[sz]ed", re.IGNORECASE)


def should_retry(*, code: int | None = None, reason: str = "", http_status: int | None = None) -> bool:
    """False for refusals that can never succeed (auth failures 4001/4003/1008-auth, an HTTP 4xx
    handshake answer such as 401, 403 or 404); true for losses (1001 restart, 1006, 4008 slow
    consumer, 1011, a timeout or a connection refused while the daemon restarts)."""
    if http_status is not None:
        return http_status in (408, 429) or http_status >= 500
    if code in (4001, 4003):
        return False
    if code == 1008 and _AUTH_REASON.search(reason or ""):
        return False
    return True


def reconnect_backoff(first: float = 0.5, maximum: float = 30.0) -> Backoff:
    """The client's reconnect waits, the browser client's (backoff.js): ``first`` doubling up to
    ``maximum`` (seconds) with full jitter, never below ``first / 2`` — a zero wait would hammer a
    daemon that refuses connections at once."""
    return Backoff(first, maximum, jitter=random.random)
