"""Per-client limits on what a client may make the server do: token buckets.

The message bucket counts every frame a client sends (text messages, each fragment of a
fragmented one, pings, pongs) and closes the connection when the flood goes on; the snapshot
bucket counts the bytes of the SNAPSHOTs a client asks for and only refuses (no close)."""

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
    """Bucket size: how many messages (or bytes) may arrive at once."""
    strikes_allowed: int | None
    """How many consecutive limited takes are allowed before the verdict is CLOSE; None: never."""
    tokens: float = 0.0
    updated: float = 0.0
    strikes: int = 0

    @classmethod
    def start(cls, rate: float, burst: float, strikes_allowed: int | None, now: float) -> TokenBucket:
        return cls(rate, burst, strikes_allowed, tokens=burst, updated=now)

    def take(self, now: float, cost: float = 1.0) -> RateVerdict:
        """Spend ``cost`` tokens if the bucket holds them.  A cost larger than the whole bucket is
        granted when the bucket is full, and leaves it in debt (negative) until the refill pays it
        back: a SNAPSHOT larger than the burst can still be asked for, just not often."""
        if self.rate <= 0 or cost <= 0:  # off, or nothing spent (an empty SNAPSHOT)
            return RateVerdict.OK
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= min(cost, self.burst):
            self.tokens -= cost
            self.strikes = 0
            return RateVerdict.OK
        self.strikes += 1
        if self.strikes_allowed is not None and self.strikes > self.strikes_allowed:
            return RateVerdict.CLOSE
        return RateVerdict.LIMITED
