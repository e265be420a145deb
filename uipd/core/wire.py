"""Encoding of server-to-client messages (docs/protocol.md section 4) and WebSocket text framing.

Every builder returns a *frame*: the JSON payload already wrapped in an unmasked RFC 6455
text frame, so that a message sent to many clients is encoded and framed exactly once and
the shell only writes the same bytes to each socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from attrs import field, frozen

from uipd.core.compression import Frame, frame_header, payload_offset

_OPCODE_TEXT = 0x1
_OPCODE_PING = 0x9
_FIN = 0x80


def dumps(obj: Any) -> bytes:
    """JSON as compact UTF-8 bytes (non-ASCII kept as UTF-8, like JavaScript's JSON.stringify)."""
    return orjson.dumps(obj)


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


# Published data must be plain JSON: a datetime or a dataclass would be encoded in orjson's own
# way (a timestamp without the protocol's "Z" and milliseconds), so they are refused, not guessed.
_DATA_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_data(obj: Any) -> bytes:
    """Published data as JSON; raises ``TypeError`` for what JSON cannot hold (non-string keys,
    sets, Decimals, integers beyond 64 bits, nesting deeper than 254 levels, datetimes).
    NaN and infinities are written as ``null``: :mod:`uipd.core.publish` refuses them."""
    return orjson.dumps(obj, option=_DATA_OPTIONS)


def _frame(opcode: int, payload: bytes) -> bytes:
    return frame_header(_FIN | opcode, len(payload)) + payload


def frame_text(payload: bytes) -> bytes:
    """Wrap a UTF-8 payload in one final, unmasked server text frame: a
    :class:`~uipd.core.compression.Frame`, so that its compressed variant, if some client needs
    it, is built once for every recipient (callers see plain bytes)."""
    return Frame(_frame(_OPCODE_TEXT, payload))


def frame_payload(frame: bytes) -> bytes:
    """The payload of an unmasked frame built here (e.g. a history entry's JSON, for ``missedAlerts``)."""
    return bytes(frame[payload_offset(frame) :])


def frame_ping(payload: bytes) -> bytes:
    """A server ping control frame (payload at most 125 bytes)."""
    if len(payload) > 125:
        raise ValueError("ping payload over 125 bytes")
    return _frame(_OPCODE_PING, payload)


# -- message builders: each returns a ready frame ------------------------------------------------


def connection_frame(
    welcome: str, ts: str, heartbeat_ms: int, client_id: str, topics: Sequence[str]
) -> bytes:
    return frame_text(
        dumps(
            {
                "type": "connection",
                "message": welcome,
                "timestamp": ts,
                "heartbeatInterval": heartbeat_ms,
                "clientId": client_id,
                "topics": list(topics),
            }
        )
    )


@frozen
class RecoveryFields:
    """What a recovery answer's SNAPSHOT adds (PROTOCOL.md section 8)."""

    recovered: Sequence[str] = ()
    missed_alerts: Mapping[str, Sequence[bytes]] = field(factory=dict)
    """Per topic, the payloads (plain JSON, see ``frame_payload``) of the gap's ALERTs in seq order."""
    alerts_lost: Sequence[str] = ()


Positions = Mapping[str, tuple[int, str]]
"""topic -> (seq, epoch)."""


def positions_json(positions: Positions) -> bytes:
    return b"{" + b",".join(
        dumps(name) + b':{"seq":%d,"epoch":' % seq + dumps(epoch) + b"}" for name, (seq, epoch) in positions.items()
    ) + b"}"


def snapshot_frame(
    sections: Iterable[tuple[str, bytes]],
    ts: str,
    *,
    resync: bool = False,
    positions: Positions | None = None,
    recovery: RecoveryFields | None = None,
) -> bytes:
    """A SNAPSHOT from already-encoded topic sections (each the JSON list of a topic's entities),
    with the position of each section and, in a recovery answer, its verdicts."""
    parts = [b'{"type":"SNAPSHOT","data":{']
    parts.append(b",".join(dumps(name) + b":" + section for name, section in sections))
    parts.append(b"}")
    if positions is not None:
        parts.append(b',"positions":' + positions_json(positions))
    if recovery is not None:
        parts.append(b',"recovered":' + dumps(list(recovery.recovered)) + b',"missedAlerts":{')
        parts.append(
            b",".join(dumps(name) + b":[" + b",".join(payloads) + b"]" for name, payloads in recovery.missed_alerts.items())
        )
        parts.append(b'},"alertsLost":' + dumps(list(recovery.alerts_lost)))
    parts.append(b',"timestamp":"' + ts.encode() + b'"')
    if resync:
        parts.append(b',"resync":true')
    parts.append(b"}")
    return frame_text(b"".join(parts))


def pong_frame(ts: str) -> bytes:
    return frame_text(b'{"type":"PONG","timestamp":"' + ts.encode() + b'"}')


def subscribed_frame(topics: Iterable[str], ts: str) -> bytes:
    return frame_text(dumps({"type": "SUBSCRIBED", "topics": sorted(topics), "timestamp": ts}))


def error_frame(code: str, message: str, ts: str, *, topics: Sequence[str] = ()) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if topics:
        error["topics"] = list(topics)
    return frame_text(dumps({"type": "ERROR", "error": error, "timestamp": ts}))


def update_payload(
    topic: str | None, data_json: bytes, removed: Sequence[str] | None, ts: str, seq: int | None
) -> bytes:
    """An UPDATE around its already-encoded ``data`` (a publication's ``data_json``, spliced in as is)."""
    msg: dict[str, Any] = {"type": "UPDATE"}
    if topic is not None:
        msg["topic"] = topic
    msg["data"] = orjson.Fragment(data_json)
    if removed:
        msg["removed"] = list(removed)
    msg["timestamp"] = ts
    if seq is not None:
        msg["seq"] = seq
    return dumps(msg)


def alert_payload(topic: str | None, data_json: bytes, ts: str, seq: int | None) -> bytes:
    """An ALERT around its already-encoded ``data``."""
    msg: dict[str, Any] = {"type": "ALERT"}
    if topic is not None:
        msg["topic"] = topic
    msg["data"] = orjson.Fragment(data_json)
    msg["timestamp"] = ts
    if seq is not None:
        msg["seq"] = seq
    return dumps(msg)


def message_frame(
    kind: str, topic: str | None, data_json: bytes, removed: Sequence[str] | None, ts: str, seq: int | None
) -> bytes:
    """The frame of a topic message (``kind`` "UPDATE" or "ALERT"): the one builder used by the
    fan-out and by whatever rebuilds a message later (the Redis broker's history), so a replay is
    byte for byte what was first sent."""
    if kind == "UPDATE":
        return frame_text(update_payload(topic, data_json, removed, ts, seq))
    return frame_text(alert_payload(topic, data_json, ts, seq))
