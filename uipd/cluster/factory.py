"""Choosing the broker from ``[broker]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uipd.cluster.memory import MemoryBroker
from uipd.cluster.redis import RedisBroker, default_node_id
from uipd.config import BrokerConfig
from uipd.core.clock import Instant
from uipd.core.hub import Hub


def make_broker(config: BrokerConfig, hub: Hub, now: Callable[[], Instant], node_stats: Callable[[], dict[str, Any]]) -> MemoryBroker | RedisBroker:
    if config.kind == "memory":
        return MemoryBroker(hub, now)
    return RedisBroker(
        hub, now, config.url, config.prefix, config.node_id or default_node_id(), config.max_pending, node_stats,
        command_timeout=config.command_timeout, ping_interval=config.ping_interval, publish_timeout=config.publish_timeout,
        alert_record=config.alert_record, history_batch=config.history_batch, history_queue=config.history_queue,
    )
