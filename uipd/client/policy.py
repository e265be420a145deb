"""When to reconnect and how long to wait: the same rules as the browser client
(clients/js/src/policy.js and backoff.js)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from attrs import define, field

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


@define
class Backoff:
    """Exponential delays with full jitter, never below ``min_delay / 2`` (seconds)."""

    min_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    random: Callable[[], float] = random.random
    attempt: int = field(default=0, init=False)

    def next(self) -> float:
        cap = min(self.max_delay, self.min_delay * self.factor**self.attempt)
        self.attempt += 1
        return self.min_delay / 2 + self.random() * max(0.0, cap - self.min_delay / 2)

    def reset(self) -> None:
        self.attempt = 0
