"""Client-to-server messages (docs/protocol.md section 2): the request types and their parser.

``parse_client_message`` turns one text frame into a frozen request object or raises
:class:`~uipd.core.errors.ClientError` with the ``ERROR`` code the client gets back.
"""

from __future__ import annotations

from typing import Any, Union

import orjson
from attrs import frozen

from uipd.core.errors import ClientError


@frozen
class Subscribe:
    """``{"action":"subscribe","topics":[...]}``."""

    topics: tuple[str, ...]
    snapshot: bool = False
    """``"snapshot": true``: also send a SNAPSHOT of the newly added topics."""
    since: Any = None
    """The raw ``since`` value (positions to recover, PROTOCOL.md section 8) when ``has_since``;
    checked by the dispatcher, which knows the topics (:func:`uipd.core.recovery.parse_since`)."""
    has_since: bool = False


@frozen
class Unsubscribe:
    """``{"action":"unsubscribe","topics":[...]}``."""

    topics: tuple[str, ...]


@frozen
class Ping:
    """``{"action":"ping"}``: a sign of life, answered with PONG."""


@frozen
class SnapshotRequest:
    """``{"action":"snapshot"}``: current state again, of ``topics`` or (``None``) of the subscribed set."""

    topics: tuple[str, ...] | None


ClientRequest = Union[Subscribe, Unsubscribe, Ping, SnapshotRequest]

_TOPICS_ERROR = '"topics" must be a list of strings'


def _topic_list(msg: dict, *, required: bool) -> tuple[str, ...] | None:
    # The original backend's clients send "channels"; "topics" wins when both are present.
    value = msg["topics"] if "topics" in msg else msg.get("channels")
    if value is None and not required:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ClientError("bad_request", _TOPICS_ERROR)
    return tuple(value)


def parse_client_message(text: str) -> ClientRequest:
    """Parse one client text frame; raise ClientError(bad_request|unknown_action) when it is wrong."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ClientError("bad_request", "message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ClientError("bad_request", "message must be a JSON object")
    # Legacy clients say "type" where the protocol says "action".
    action = msg["action"] if "action" in msg else msg.get("type")
    if action is None:
        raise ClientError("bad_request", 'message has no "action"')
    if not isinstance(action, str):
        raise ClientError("bad_request", '"action" must be a string')
    if action == "subscribe":
        return Subscribe(
            _topic_list(msg, required=True), snapshot=msg.get("snapshot") is True, since=msg.get("since"), has_since="since" in msg
        )
    if action == "unsubscribe":
        return Unsubscribe(_topic_list(msg, required=True))
    if action == "ping":
        return Ping()
    if action == "snapshot":
        return SnapshotRequest(_topic_list(msg, required=False))
    raise ClientError("unknown_action", f"unknown action: {action[:64]}")
