"""The time value the shell hands to the core (the core never reads a clock itself)."""

from __future__ import annotations

from attrs import frozen


@frozen
class Instant:
    """One moment, as the core needs it."""

    mono: float
    """Monotonic seconds, for durations (heartbeat, rate limit, cache age)."""
    iso: str
    """Wall-clock UTC in the wire format, e.g. ``2025-11-29T10:30:00.000Z``."""
