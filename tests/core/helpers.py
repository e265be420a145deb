"""Test helpers for the core: decode the RFC 6455 frames the hub queues, make Instants, and drive
a hub as a client would (connect, send, publish)."""

from __future__ import annotations

import json
import random
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

from uipd.core import publish
from uipd.core.clock import Instant
from uipd.core.hub import Hub, HubSettings, Session
from uipd.core.topics import TopicTable

OP_TEXT = 0x1
OP_PING = 0x9

TOPICS = ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]

_EPOCH = datetime(2025, 11, 29, 10, 30, tzinfo=timezone.utc)


def at(mono: float) -> Instant:
    """An Instant at ``mono`` seconds, with a matching wire timestamp."""
    wall = _EPOCH + timedelta(seconds=mono)
    return Instant(mono, wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 1000:03d}Z")


def decode_frame(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """Decode one unmasked, final server frame at ``pos``: (opcode, payload, next position)."""
    b0, b1 = data[pos], data[pos + 1]
    assert b0 & 0x80, "FIN bit not set"
    assert b0 & 0x70 == 0, "RSV bits set"
    assert b1 & 0x80 == 0, "server frames must not be masked"
    n = b1 & 0x7F
    pos += 2
    if n == 126:
        (n,) = struct.unpack_from("!H", data, pos)
        assert n >= 126, "16-bit length used for a short payload"
        pos += 2
    elif n == 127:
        (n,) = struct.unpack_from("!Q", data, pos)
        assert n >= 65536, "64-bit length used for a payload that fits 16 bits"
        pos += 8
    payload = data[pos : pos + n]
    assert len(payload) == n, "truncated frame"
    return b0 & 0x0F, payload, pos + n


def decode_one(frame: bytes) -> tuple[int, bytes]:
    """Decode a buffer holding exactly one frame."""
    opcode, payload, end = decode_frame(frame)
    assert end == len(frame), "trailing bytes after the frame"
    return opcode, payload


def text_json(frame: bytes) -> Any:
    opcode, payload = decode_one(frame)
    assert opcode == OP_TEXT
    return json.loads(payload.decode("utf-8"))


def drain_frames(session: Session) -> list[bytes]:
    """What the writer would take and write now (marks it written)."""
    frames = session.outbound.take()
    session.outbound.written()
    return frames


def drain(session: Session) -> list[dict[str, Any]]:
    """The JSON messages the client would receive now (ping frames are skipped)."""
    out = []
    for frame in drain_frames(session):
        opcode, payload = decode_one(frame)
        if opcode == OP_TEXT:
            out.append(json.loads(payload.decode("utf-8")))
        else:
            assert opcode == OP_PING
    return out


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def make_hub(**settings: Any) -> Hub:
    return Hub(TopicTable.of(TOPICS), HubSettings(**settings), rng=random.Random(1234))


WELCOME = "Connected to HCMC Traffic Monitoring System"


def send(hub: Hub, session: Session, msg: object, t: float = 1.0) -> list[dict]:
    """The client sends ``msg`` (JSON-encoded unless a str); returns what it gets back."""
    hub.receive(session, msg if isinstance(msg, str) else json.dumps(msg), at(t))
    return drain(session)


def connected(hub: Hub, client_id: str, t: float = 0.0) -> Session:
    session = hub.connect(client_id, at(t))
    drain(session)
    return session


def subscribed_to(hub: Hub, client_id: str, topics: list[str]) -> Session:
    session = connected(hub, client_id)
    assert types(send(hub, session, {"action": "subscribe", "topics": topics})) == ["SUBSCRIBED"]
    return session


def update(topic: str | None, *entities: dict, removed: tuple = (), broadcast: bool = False) -> publish.Publication:
    return publish.update(topic, entities, removed, broadcast=broadcast)


def big(i: int) -> dict:
    return {"id": i, "blob": "x" * 300}

