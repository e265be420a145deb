"""A small trio client for uipd: topic state, subscriptions, alerts, reconnect with backoff.

See :mod:`uipd.client.client` for the model and docs/clients.md for examples."""

from uipd.client.client import Event, Refused, UipdClient, Unreachable, open_client
from uipd.client.policy import reconnect_backoff, should_retry
from uipd.client.positions import Position, Positions
from uipd.client.state import TopicState
from uipd.core.backoff import Backoff

__all__ = [
    "Backoff", "Event", "Position", "Positions", "Refused", "TopicState", "UipdClient", "Unreachable", "open_client",
    "reconnect_backoff", "should_retry",
]
