"""MQTT messages to uipd entities: which route a message takes, its id, its payload.  No I/O."""

from __future__ import annotations

from typing import Any

from attrs import frozen
from paho.mqtt.client import topic_matches_sub
from uipd.plugin_tools import parse_json

from uipd_mqtt.options import Route


class BadPayload(ValueError):
    """The message cannot become an entity; the message says why."""


@frozen
class Change:
    """What one message does to its uipd topic."""

    topic: str
    entity: dict[str, Any] | None
    removed: str | None = None


def route_for(routes: tuple[Route, ...], mqtt_topic: str) -> Route | None:
    """The first route whose filter matches ``mqtt_topic``."""
    return next((r for r in routes if topic_matches_sub(r.filter, mqtt_topic)), None)


def to_change(route: Route, mqtt_topic: str, payload: bytes, max_bytes: int) -> Change:
    """The entity a message carries; an empty payload with the id in the topic removes the entity
    (it is how a retained value is cleared)."""
    ident: Any = None
    if route.id_level:
        levels = mqtt_topic.split("/")
        if route.id_level > len(levels) or not levels[route.id_level - 1]:
            raise BadPayload(f"topic {mqtt_topic!r} has no level {route.id_level} to take the id from")
        ident = levels[route.id_level - 1]
        if not payload:
            return Change(route.topic, None, route.id_prefix + ident)
    if len(payload) > max_bytes:
        raise BadPayload(f"payload of {len(payload)} bytes is over max_payload_bytes ({max_bytes})")
    try:
        data = parse_json(payload)
    except ValueError as exc:  # UnicodeDecodeError, NaN and too deep included
        raise BadPayload(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadPayload(f"expected a JSON object, got {type(data).__name__}")
    if route.id_field:
        ident = data.get(route.id_field)
        if isinstance(ident, bool) or not isinstance(ident, (str, int)) or ident == "":
            raise BadPayload(f"no usable id in field {route.id_field!r}")
    return Change(route.topic, {**data, "id": f"{route.id_prefix}{ident}" if route.id_prefix else ident})
