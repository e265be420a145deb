"""The hub's settings as the config gives them: read at start and again by each reload."""

from __future__ import annotations

from uipd.config import Config
from uipd.core.hub import HubSettings


def hub_settings(config: Config) -> HubSettings:
    s, hb, h = config.server, config.heartbeat, config.history
    return HubSettings(
        welcome=s.welcome,
        default_topics=s.default_topics,
        heartbeat_interval=hb.interval,
        heartbeat_timeout=hb.timeout,
        max_queue_bytes=s.max_queue_bytes,
        slow_consumer=s.slow_consumer,
        rate_limit=s.rate_limit,
        rate_burst=float(s.rate_burst),
        rate_limit_strikes=s.rate_limit_strikes,
        max_subscriptions=s.max_subscriptions,
        max_message_bytes=s.max_message_bytes,
        max_fragments=s.max_fragments,
        snapshot_budget_bytes=float(s.snapshot_budget_bytes),
        snapshot_burst_bytes=float(s.snapshot_burst_bytes),
        history_size=h.size,
        history_ttl=float(h.ttl),
        history_max_bytes=h.max_bytes,
        max_replay=h.max_replay,
    )
