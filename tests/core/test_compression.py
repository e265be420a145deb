"""uipd.core.compression: a frame's deflate variant (threshold, only if it shrinks, RSV1 header
lengths) and the bounded inflater (a bomb stops at the bound, without expanding in memory)."""

from __future__ import annotations

import os
import zlib

import pytest

from uipd.core import wire
from uipd.core.compression import BoundedInflater, Frame, InflateError, MessageTooBig, build_variant, deflate_payload, payload_offset


def inflate(frame: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(frame[payload_offset(frame):] + b"\x00\x00\xff\xff")


@pytest.mark.parametrize("size", [300, 70_000, 2_000_000])  # 7-bit, 16-bit and 64-bit lengths once compressed
def test_variant_inflates_to_the_payload(size: int) -> None:
    payload = (os.urandom(size // 8).hex() * 8).encode()[:size] if size > 1000 else b"a" * size
    frame = wire.frame_text(payload)
    assert type(frame) is Frame and frame.deflated() is None
    variant, _ = build_variant(frame, 1, 256)
    assert variant[0] == 0xC1 and len(variant) < len(frame)
    assert inflate(variant) == payload


def test_small_or_incompressible_frames_stay_plain() -> None:
    small = wire.frame_text(b"x" * 100)
    assert build_variant(small, 1, 256)[0] is small
    noise = wire.frame_text(os.urandom(1000).hex().encode()[:1000])  # hex: compressible a little
    random_bytes = wire.frame_text(os.urandom(600))
    assert build_variant(random_bytes, 1, 256)[0] is random_bytes  # does not shrink
    assert len(build_variant(noise, 1, 256)[0]) <= len(noise)


def test_control_frames_are_plain_bytes() -> None:
    assert type(wire.frame_ping(b"x")) is bytes


def test_inflater_bound() -> None:
    data = b"z" * 10_000
    ok = BoundedInflater(10_000)
    assert ok.feed(deflate_payload(data, 6)) + ok.finish() == data
    with pytest.raises(MessageTooBig):
        bomb = BoundedInflater(9_999)
        bomb.feed(deflate_payload(data, 6))
        bomb.finish()
    with pytest.raises(InflateError):
        BoundedInflater(100).feed(b"\xff\xff\xff\xff")
