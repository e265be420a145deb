"""A small trio client for uipd: topic state, subscriptions, alerts, reconnect with backoff.

See :mod:`uipd.client.client` for the model and docs/clients.md for examples."""

from uipd.client.client import Event, Refused, UipdClient, open_client
from uipd.client.policy import reconnect_backoff, should_retry
from uipd.client.state import TopicState
from uipd.core.backoff import Backoff

__all__ = ["Backoff", "Event", "Refused", "TopicState", "UipdClient", "open_client", "reconnect_backoff", "should_retry"]
