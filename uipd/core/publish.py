"""What may be published (PROTOCOL.md sections 4 and 7): validation shared by the HTTP API and sources.

A :class:`Publication` is built only from valid input; building it is the single place where
an API body or a source's call is checked, so both paths publish exactly the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from attrs import frozen

from uipd.core.errors import PublishError

Kind = Literal["UPDATE", "ALERT"]


@frozen
class Publication:
    kind: Kind
    topic: str | None
    """The topic, or None for a broadcast that belongs to no topic."""
    data: Any
    """UPDATE: the list of entities (each a JSON object with an ``id``); ALERT: any JSON value."""
    removed: tuple[str, ...] = ()
    broadcast: bool = False
    """Deliver to every client whatever its subscriptions (``/api/broadcast``)."""

    @property
    def upserts(self) -> list[tuple[str, Any]]:
        return [(entity_key(e), e) for e in self.data] if self.kind == "UPDATE" else []


def entity_key(entity: Mapping[str, Any]) -> str:
    """Entities are keyed by their ``id`` as a string (an integer id 7 and "7" are the same entity)."""
    return str(entity["id"])


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_entities(entities: Any) -> list[Any]:
    if not isinstance(entities, list):
        raise PublishError("bad_request", "UPDATE data must be a list of entities")
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict) or not _valid_id(entity.get("id")):
            raise PublishError("bad_request", f"entity {i} must be an object with a string or integer id")
    return entities


def check_removed(removed: Any) -> tuple[str, ...]:
    if removed is None:
        return ()
    if not isinstance(removed, list) or not all(_valid_id(x) for x in removed):
        raise PublishError("bad_request", '"removed" must be a list of ids')
    return tuple(str(x) for x in removed)


def update(topic: str | None, entities: Iterable[Any] = (), removed: Iterable[Any] = (), *, broadcast: bool = False) -> Publication:
    """An UPDATE: upserts ``entities`` and deletes the ids in ``removed``."""
    return Publication("UPDATE", topic, check_entities(list(entities)), check_removed(list(removed)), broadcast)


def alert(topic: str | None, data: Any, *, broadcast: bool = False) -> Publication:
    """An ALERT: delivered to the topic's subscribers, no change of state, never silently dropped."""
    return Publication("ALERT", topic, data, (), broadcast)


def from_api_body(body: Any, *, broadcast: bool) -> Publication:
    """Validate a ``/api/publish`` or ``/api/broadcast`` body (already JSON-decoded)."""
    if not isinstance(body, dict):
        raise PublishError("bad_request", "body must be a JSON object")
    unknown = set(body) - {"topic", "type", "data", "removed"}
    if unknown:
        raise PublishError("bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    kind = body.get("type", "UPDATE")
    if kind not in ("UPDATE", "ALERT"):
        raise PublishError("bad_request", '"type" must be "UPDATE" or "ALERT"')
    topic = body.get("topic")
    if topic is not None or not broadcast:
        if not isinstance(topic, str) or not topic:
            raise PublishError("bad_request", '"topic" must be a non-empty string')
    if kind == "ALERT":
        if "data" not in body:
            raise PublishError("bad_request", 'an ALERT needs "data"')
        if "removed" in body:
            raise PublishError("bad_request", 'an ALERT has no "removed"')
        return alert(topic, body["data"], broadcast=broadcast)
    data = body.get("data", [])
    # A single entity object is accepted in place of a one-element list (the seed's backends send both).
    entities = [data] if isinstance(data, dict) else data
    return Publication("UPDATE", topic, check_entities(entities), check_removed(body.get("removed")), broadcast)
