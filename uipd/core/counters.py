"""What the hub counts, for the metrics (``uipd.runtime.metrics`` reads these at scrape time).

Each counter moves at most once per publish, per client message or per connection, never per
delivery: the fan-out's hot path counts nothing but its recipients.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from attrs import define, field

from uipd.core.closecodes import ABNORMAL


@define
class HubCounters:
    connections: int = 0
    """Sessions made (handshakes completed)."""
    published: int = 0
    """Publications on one topic (not broadcasts)."""
    broadcasts: int = 0
    deliveries: int = 0
    """Frames of publications queued for a client: one per recipient."""
    resyncs: int = 0
    """Clients that fell behind and were owed a resync SNAPSHOT (or all of them, at a cluster
    resync)."""
    slow_disconnects: int = 0
    """Clients closed 4008 as slow consumers."""
    heartbeat_drops: int = 0
    """Clients dropped for no sign of life within the heartbeat timeout."""
    client_errors: int = 0
    rate_limit_closes: int = 0
    """Clients closed 1008 for frames past the rate limit and its strikes."""
    expired_closes: int = 0
    """Clients closed 4001 when their credentials expired."""
    forbidden: int = 0
    """Requests answered ERROR ``forbidden`` (topics outside a JWT ``topics`` claim)."""
    subscription_limit: int = 0
    """Subscribes answered ERROR ``too_many_subscriptions``."""
    dropped_updates: int = 0
    """UPDATEs dropped for clients that are gone (superseded by a resync SNAPSHOT); a connected
    client's own count is its queue's until it disconnects (see ``Hub.dropped_updates``)."""
    published_by: Counter[tuple[str, str, bool]] = field(factory=Counter)
    """(topic, "UPDATE"|"ALERT", broadcast) -> publications; topic "" for a broadcast without one."""
    delivered_bytes: int = 0
    """Bytes of UPDATE/ALERT frames handed to clients' queues (frame size x recipients)."""
    slow_by_topic: Counter[tuple[str, str]] = field(factory=Counter)
    """(topic, "resync"|"disconnect") -> slow-consumer events caused by a publish on that topic."""
    closes: Counter[int] = field(factory=Counter)
    """Connections closed, by close code (1006: dropped without a close frame)."""
    handshake_timeouts: int = 0
    recoveries: Counter[str] = field(factory=Counter)
    """Topics asked to recover (PROTOCOL.md section 8), by outcome (see uipd.core.recovery.OUTCOMES)."""
    replayed_messages: int = 0
    """Messages queued again from history for recovering clients."""

    def count_publish(self, topic: str | None, kind: str, broadcast: bool, frame_bytes: int, recipients: int, slow_before: tuple[int, int]) -> None:
        """Once per publish: per-topic counts, and the slow-consumer events its fan-out caused."""
        self.published_by[(topic or "", kind, broadcast)] += 1
        self.delivered_bytes += frame_bytes * recipients
        if self.resyncs != slow_before[0]:
            self.slow_by_topic[(topic or "", "resync")] += self.resyncs - slow_before[0]
        if self.slow_disconnects != slow_before[1]:
            self.slow_by_topic[(topic or "", "disconnect")] += self.slow_disconnects - slow_before[1]

    def count_close(self, *reasons: Any) -> None:
        """Count a closed connection under the first known close code among ``reasons`` (objects
        with a ``code``, or None); 1006 when there is none."""
        self.closes[next((r.code for r in reasons if r is not None), ABNORMAL)] += 1
