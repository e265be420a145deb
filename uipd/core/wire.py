"""Encoding of server-to-client messages (docs/protocol.md section 4) and WebSocket text framing.

Every builder returns a *frame*: the JSON payload already wrapped in an unmasked RFC 6455
text frame, so that a message sent to many clients is encoded and framed exactly once and
the shell only writes the same bytes to each socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

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
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, n)
    return header + payload


def frame_text(payload: bytes) -> bytes:
    """Wrap a UTF-8 payload in one final, unmasked server text frame."""
    return _frame(_OPCODE_TEXT, payload)


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


def snapshot_frame(sections: Iterable[tuple[str, bytes]], ts: str, *, resync: bool = False) -> bytes:
    """A SNAPSHOT from already-encoded topic sections (each the JSON list of a topic's entities)."""
    parts = [b'{"type":"SNAPSHOT","data":{']
    parts.append(b",".join(dumps(name) + b":" + section for name, section in sections))
    parts.append(b'},"timestamp":"' + ts.encode() + b'"')
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
