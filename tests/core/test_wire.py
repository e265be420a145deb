from __future__ import annotations

import json

import pytest

from tests.core.helpers import OP_PING, OP_TEXT, decode_frame, decode_one, text_json
from uipd.core import wire


@pytest.mark.parametrize(
    ("size", "header_len", "len_byte"),
    [
        (0, 2, 0),
        (1, 2, 1),
        (125, 2, 125),
        (126, 4, 126),
        (127, 4, 126),
        (65535, 4, 126),
        (65536, 10, 127),
        (70000, 10, 127),
    ],
)
def test_text_frame_length_boundaries(size: int, header_len: int, len_byte: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert len(payload) == size
    frame = wire.frame_text(payload)
    assert len(frame) == header_len + size
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] == len_byte  # no mask bit
    opcode, decoded = decode_one(frame)
    assert opcode == OP_TEXT
    assert decoded == payload


def test_concatenated_frames_decode_in_order() -> None:
    frames = [wire.frame_text(b"a" * n) for n in (3, 200, 70000)]
    data = b"".join(frames)
    pos, seen = 0, []
    while pos < len(data):
        _, payload, pos = decode_frame(data, pos)
        seen.append(len(payload))
    assert seen == [3, 200, 70000]


def test_ping_frame_opcode_and_limit() -> None:
    frame = wire.frame_ping(b"uipd-1")
    assert frame[0] == 0x89
    assert decode_one(frame) == (OP_PING, b"uipd-1")
    assert decode_one(wire.frame_ping(b"x" * 125)) == (OP_PING, b"x" * 125)
    with pytest.raises(ValueError):
        wire.frame_ping(b"x" * 126)


def test_snapshot_frame_sections_without_resync() -> None:
    sections = [("cameras", b'[{"id":"1","ok":true}]'), ("weather", b"[]")]
    msg = text_json(wire.snapshot_frame(sections, "2025-11-29T10:30:00.000Z"))
    assert msg == {
        "type": "SNAPSHOT",
        "data": {"cameras": [{"id": "1", "ok": True}], "weather": []},
        "timestamp": "2025-11-29T10:30:00.000Z",
    }
    assert "resync" not in msg
    # Sections keep the order they were given in.
    assert list(msg["data"]) == ["cameras", "weather"]


def test_snapshot_frame_resync_flag_only_when_asked() -> None:
    msg = text_json(wire.snapshot_frame([("cameras", b"[]")], "T", resync=True))
    assert msg["resync"] is True
    assert msg["data"] == {"cameras": []}


def test_snapshot_frame_empty_and_escaped_topic_name() -> None:
    assert text_json(wire.snapshot_frame([], "T"))["data"] == {}
    msg = text_json(wire.snapshot_frame([('we"ird', b"[1]")], "T"))
    assert msg["data"] == {'we"ird': [1]}


def test_non_ascii_stays_utf8() -> None:
    welcome = "Xin chào Sài Gòn — Đường"
    frame = wire.connection_frame(welcome, "T", 10000, "c1", ["cameras"])
    _, payload = decode_one(frame)
    assert "chào Sài Gòn — Đường".encode() in payload
    assert b"\\u" not in payload
    assert json.loads(payload)["message"] == welcome

    data = [{"id": "x", "name": "Ngã tư Hàng Xanh"}]
    payload = wire.update_payload("cameras", wire.dumps(data), (), "T", 1)
    assert "Ngã tư Hàng Xanh".encode() in payload
    assert b"\\u" not in payload


def test_connection_frame_fields() -> None:
    msg = text_json(wire.connection_frame("hello", "T", 10000, "abc", ("cameras", "weather")))
    assert msg == {
        "type": "connection",
        "message": "hello",
        "timestamp": "T",
        "heartbeatInterval": 10000,
        "clientId": "abc",
        "topics": ["cameras", "weather"],
    }


def test_update_payload_optional_fields() -> None:
    full = json.loads(wire.update_payload("cameras", b'[{"id":"1"}]', ("2", "3"), "T", 5))
    assert full == {"type": "UPDATE", "topic": "cameras", "data": [{"id": "1"}], "removed": ["2", "3"], "timestamp": "T", "seq": 5}
    bare = json.loads(wire.update_payload(None, b"[]", (), "T", None))
    assert bare == {"type": "UPDATE", "data": [], "timestamp": "T"}


def test_alert_payload() -> None:
    assert json.loads(wire.alert_payload("accidents", b'{"sev":"high"}', "T", 2)) == {
        "type": "ALERT",
        "topic": "accidents",
        "data": {"sev": "high"},
        "timestamp": "T",
        "seq": 2,
    }
    assert json.loads(wire.alert_payload(None, b'"x"', "T", None)) == {"type": "ALERT", "data": "x", "timestamp": "T"}


def test_small_frames() -> None:
    assert text_json(wire.pong_frame("T")) == {"type": "PONG", "timestamp": "T"}
    assert text_json(wire.subscribed_frame({"weather", "all", "cameras"}, "T")) == {
        "type": "SUBSCRIBED",
        "topics": ["all", "cameras", "weather"],
        "timestamp": "T",
    }
    assert text_json(wire.error_frame("bad_request", "nope", "T")) == {
        "type": "ERROR",
        "error": {"code": "bad_request", "message": "nope"},
        "timestamp": "T",
    }
    err = text_json(wire.error_frame("unknown_topic", "unknown", "T", topics=["x", "y"]))
    assert err["error"]["topics"] == ["x", "y"]
