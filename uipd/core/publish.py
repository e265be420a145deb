"""What may be published (docs/protocol.md sections 4 and 7): validation shared by the HTTP API and sources.

A :class:`Publication` is built only from valid input; building it is the single place where
an API body or a source's call is checked, so both paths publish exactly the same way.  Building
it also encodes its data, once: what cannot be encoded is refused here, before the hub changes
anything, and the hub splices the bytes into the UPDATE/ALERT frame instead of encoding again.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from attrs import field, frozen

from uipd.core import wire
from uipd.core.errors import PublishError

Kind = Literal["UPDATE", "ALERT"]


@frozen
class Publication:
    kind: Kind
    topic: str | None
    """The topic, or None for a broadcast that belongs to no topic."""
    data: Any
    """UPDATE: the list of entities (each a JSON object with an ``id``); ALERT: any JSON value.
    The hub's own copy, decoded from ``data_json``: it never shares an object with the publisher,
    so a source that mutates what it published changes nothing until it publishes again."""
    removed: tuple[str, ...] = ()
    broadcast: bool = False
    """Deliver to every client whatever its subscriptions (``/api/broadcast``)."""
    data_json: bytes = field(kw_only=True, eq=False, repr=False)
    """``data`` encoded as JSON, exactly what clients receive."""

    @property
    def upserts(self) -> list[tuple[str, Any]]:
        return [(entity_key(e), e) for e in self.data] if self.kind == "UPDATE" else []


def entity_key(entity: Mapping[str, Any]) -> str:
    """Entities are keyed by their ``id`` as a string (an integer id 7 and "7" are the same entity)."""
    return str(entity["id"])


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _id_problem(entity: Any) -> str:
    """What is wrong with a refused entity's id when "must be a string or integer id" would not say
    it: a number that is not an integer (1e23, 7.0).  An integer beyond 64 bits passes here and is
    refused by the encoding, which says it is out of range."""
    ident = entity.get("id") if isinstance(entity, dict) else None
    return f": its id {ident!r} is a number but not an integer" if isinstance(ident, float) else ""


def check_entities(entities: Any) -> list[Any]:
    if not isinstance(entities, list):
        raise PublishError("bad_request", "UPDATE data must be a list of entities")
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict) or not _valid_id(entity.get("id")):
            raise PublishError("bad_request", f"entity {i} must be an object with a string or integer id{_id_problem(entity)}")
    return entities


def check_removed(removed: Any) -> tuple[str, ...]:
    if removed is None:
        return ()
    if not isinstance(removed, list) or not all(_valid_id(x) for x in removed):
        raise PublishError("bad_request", '"removed" must be a list of ids')
    ids = tuple(str(x) for x in removed)
    try:
        wire.dumps_data(ids)  # a string with a lone surrogate has no UTF-8: the frame would fail later
    except TypeError as exc:
        raise PublishError("bad_request", f'"removed" cannot be encoded as JSON ({exc})') from None
    return ids


def _entity_name(entities: list[Any], i: int) -> str:
    return f"entity {i} (id {reprlib.repr(entities[i]['id'])})"


def _encoded(data: Any, *, owned: bool, name: Callable[[int], str] | None) -> tuple[bytes, Any]:
    """``data`` as JSON bytes, and the hub's copy of it.

    ``owned``: ``data`` was just decoded from JSON by the caller (an API body) and is shared with
    nobody, so it is its own copy and holds no NaN.  ``name``: for an UPDATE's list, names entity i
    in the errors (None: the data is an ALERT's)."""
    try:
        encoded = wire.dumps_data(data)
    except TypeError as exc:
        raise PublishError("bad_request", _unencodable(data, name, exc)) from None
    if owned:
        return encoded, data
    copy = wire.loads(encoded)
    # orjson writes NaN and infinities as null, silently.  The search costs about as much as the
    # encoding; the comparison only runs when the data has a null, and the walk only when the copy
    # differs (a NaN, or just a tuple that became a list).
    if b"null" in encoded and copy != data:
        path = _non_finite(data)
        if path is not None:
            place = "ALERT data" if name is None else name(path.pop(0))
            where = "".join(f"[{step!r}]" for step in path) or "the value"
            raise PublishError("bad_request", f"{place}: {where} is NaN or infinite, which JSON cannot hold")
    return encoded, copy


def _unencodable(data: Any, name: Callable[[int], str] | None, exc: TypeError) -> str:
    why = f"cannot be encoded as JSON ({exc}; JSON holds objects with string keys, arrays, strings, 64-bit integers, finite numbers, booleans and null, nested at most 254 levels)"
    if name is not None:
        for i, entity in enumerate(data):
            try:
                wire.dumps_data([entity])  # inside a list: an entity nested just too deep fails here too
            except TypeError:
                return f"{name(i)} {why}"
    return f"{'UPDATE' if name is not None else 'ALERT'} data {why}"


def _non_finite(value: Any) -> list[Any] | None:
    """The keys and indexes leading to the first NaN or infinity in ``value`` (which encoded, so
    it is at most 254 levels deep)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else []
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for step, item in items:
        inner = _non_finite(item)
        if inner is not None:
            return [step, *inner]
    return None


def _update(topic: str | None, entities: list[Any], removed: tuple[str, ...], broadcast: bool, *, owned: bool) -> Publication:
    data_json, data = _encoded(entities, owned=owned, name=lambda i: _entity_name(entities, i))
    return Publication("UPDATE", topic, data, removed, broadcast, data_json=data_json)


def update(topic: str | None, entities: Iterable[Any] = (), removed: Iterable[Any] = (), *, broadcast: bool = False) -> Publication:
    """An UPDATE: upserts ``entities`` and deletes the ids in ``removed``."""
    return _update(topic, check_entities(list(entities)), check_removed(list(removed)), broadcast, owned=False)


def check_entity(entity: Any) -> None:
    """Refuse ``entity`` as ``update`` would, alone, naming it by its id: how a source whose batch
    was refused finds the entities to leave out (``uipd.plugin_tools.publishable``)."""
    entities = check_entities([entity])
    _encoded(entities, owned=False, name=lambda i: f"entity {reprlib.repr(entity['id'])}")


def update_of_own(topic: str | None, entities: list[Any], removed: Iterable[Any] = ()) -> Publication:
    """An UPDATE of entities taken from another Publication (already checked and the hub's own):
    encoded again, not validated or copied again (``replace`` publishes a subset this way)."""
    return _update(topic, entities, check_removed(list(removed)), False, owned=True)


def alert(topic: str | None, data: Any, *, broadcast: bool = False) -> Publication:
    """An ALERT: delivered to the topic's subscribers, no change of state, never silently dropped."""
    data_json, copy = _encoded(data, owned=False, name=None)
    return Publication("ALERT", topic, copy, (), broadcast, data_json=data_json)


def decoded(kind: Kind, topic: str | None, data_json: bytes, removed: tuple[str, ...], broadcast: bool) -> Publication:
    """A publication that was validated where it was published and comes back as its JSON bytes
    (a cluster message from Redis): decoded once, not checked or encoded again."""
    return Publication(kind, topic, wire.loads(data_json), removed, broadcast, data_json=data_json)


def from_api_body(body: Any, *, broadcast: bool) -> Publication:
    """Validate a ``/api/publish`` or ``/api/broadcast`` body (already JSON-decoded, and so the
    hub's own: it is encoded to check it, not copied)."""
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
        data_json, data = _encoded(body["data"], owned=True, name=None)
        return Publication("ALERT", topic, data, (), broadcast, data_json=data_json)
    data = body.get("data", [])
    # A single entity object is accepted in place of a one-element list (the seed's backends send both).
    entities = [data] if isinstance(data, dict) else data
    return _update(topic, check_entities(entities), check_removed(body.get("removed")), broadcast, owned=True)
