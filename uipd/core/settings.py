"""The hub's settings: what the ``[server]`` config section tells the core (``uipd.config``
builds them; a reload hands new ones to ``Hub.apply_settings``)."""

from __future__ import annotations

from typing import Literal

from attrs import frozen

from uipd.core.subscriptions import ALL

SlowConsumerPolicy = Literal["resync", "disconnect"]


@frozen
class HubSettings:
    welcome: str = "Connected to HCMC Traffic Monitoring System"
    default_topics: tuple[str, ...] = (ALL,)
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    max_queue_bytes: int = 1024 * 1024
    slow_consumer: SlowConsumerPolicy = "resync"
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    rate_limit_strikes: int = 20
    max_subscriptions: int = 256
    max_message_bytes: int = 64 * 1024
    max_fragments: int = 128
    snapshot_budget_bytes: float = 128 * 1024
    """Bytes per second of requested SNAPSHOTs per client; 0: no budget."""
    snapshot_burst_bytes: float = 4 * 1024 * 1024
    history_size: int = 1000
    """Messages kept per topic for recovery (PROTOCOL.md section 8); 0: no history."""
    history_ttl: float = 300.0
    """Seconds a message is kept in history at most."""
    history_max_bytes: int = 32 * 1024 * 1024
    """Bytes of frames kept in one topic's history at most; 0: no bound."""
    max_replay: int = 500
    """Messages one topic's recovery replays at most (more: a snapshot section and ``missedAlerts``)."""
