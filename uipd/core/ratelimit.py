"""Per-client inbound message rate limit: a token bucket, then a close when the flood goes on."""

from __future__ import annotations

import enum

from attrs import define


class RateVerdict(enum.Enum):
    OK = "ok"
    LIMITED = "limited"
    """Answer with ERROR rate_limited; the connection stays."""
    CLOSE = "close"
    """The client kept sending past the limit: close 1008."""


@define
class TokenBucket:
    rate: float
    """Tokens added per second; 0 disables the limit."""
    burst: float
    """Bucket size: how many messages may arrive at once."""
    strikes_allowed: int
    """How many consecutive limited messages are answered before the connection is closed."""
    tokens: float = 0.0
    updated: float = 0.0
    strikes: int = 0

    @classmethod
    def start(cls, rate: float, burst: float, strikes_allowed: int, now: float) -> TokenBucket:
        return cls(rate, burst, strikes_allowed, tokens=burst, updated=now)

    def take(self, now: float) -> RateVerdict:
        if self.rate <= 0:
            return RateVerdict.OK
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.strikes = 0
            return RateVerdict.OK
        self.strikes += 1
        return RateVerdict.CLOSE if self.strikes > self.strikes_allowed else RateVerdict.LIMITED
