"""permessage-deflate (RFC 7692) for frames built once: each message is compressed once, for everyone.

A :class:`Frame` is a server text frame (``bytes``, so everyone else sees plain bytes) that also
holds its compressed variant once some client that negotiated compression needs it: an RSV1 frame
of the same message, or the frame itself when compressing does not pay.  Since the frame object
is shared by every recipient, by the topic history and by the snapshot cache, the variant is built
at most once per message whoever receives it and however often (a replay, a cached SNAPSHOT).

The server negotiates ``server_no_context_takeover`` (PROTOCOL.md section 9), so each message is
deflated on its own: a fresh compressor whose output is the same bytes for every connection.  No
per-connection compressor exists (the reason ws and Socket.IO turned compression off by default:
their per-socket zlib state cost gigabytes).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

_FIN_RSV1_TEXT = 0xC1
"""FIN, RSV1 ("compressed", RFC 7692 section 6) and the text opcode."""
_SYNC_TAIL = b"\x00\x00\xff\xff"
"""The empty stored block a sync flush ends with; RFC 7692 section 7.2.1 removes it (the receiver appends it back)."""
WINDOW_BITS = 15
"""Our compressor's window: the largest, which every client can inflate (we decline offers asking
for a smaller server window, see :mod:`uipd.server.deflate`)."""


class Frame(bytes):
    """A text frame built by :mod:`uipd.core.wire` that can carry its compressed variant.

    ``bytes`` subclasses cannot have slots: the instance dict exists only once a variant is
    stored (a frame no compressing client received costs nothing more than plain bytes)."""

    z: bytes

    def deflated(self) -> bytes | None:
        """The compressed variant if built (it may be this frame itself: not worth compressing)."""
        return getattr(self, "z", None)  # not self.__dict__: reading that would create the dict

    def set_deflated(self, variant: bytes) -> None:
        self.z = variant


def payload_offset(frame: bytes) -> int:
    """Where the payload of an unmasked server frame begins."""
    n = frame[1] & 0x7F
    return 2 if n < 126 else 4 if n == 126 else 10


def deflate_payload(payload: bytes | memoryview, level: int) -> bytes:
    """One message's payload deflated on its own (raw deflate, sync flush, its tail removed)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -WINDOW_BITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def frame_header(first: int, n: int) -> bytes:
    """An unmasked frame's header: its first byte (FIN, RSV bits, opcode) and the payload length ``n``."""
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return struct.pack("!BBH", first, 126, n)
    return struct.pack("!BBQ", first, 127, n)


def compressed_frame(payload: bytes) -> bytes:
    """An RSV1 text frame around an already deflated payload."""
    return frame_header(_FIN_RSV1_TEXT, len(payload)) + payload


def build_variant(frame: bytes, level: int, threshold: int, measure: Callable[[], float] | None = None) -> tuple[bytes, float]:
    """The variant of ``frame`` to send to a compressing client, and the CPU seconds it took
    (``measure``: a CPU clock injected by the shell; the core reads no clock).  The frame itself
    when its payload is under ``threshold`` bytes or deflating does not make the frame smaller
    (RFC 7692 lets each message be sent either way).  Safe to call from a worker thread: zlib
    releases the GIL while it deflates."""
    start = payload_offset(frame)
    if len(frame) - start < threshold:
        return frame, 0.0
    began = measure() if measure is not None else 0.0
    variant = compressed_frame(deflate_payload(memoryview(frame)[start:], level))
    spent = measure() - began if measure is not None else 0.0
    return (variant if len(variant) < len(frame) else frame), spent


class InflateError(Exception):
    """A compressed client message is not valid deflate data."""


class MessageTooBig(Exception):
    """A compressed client message inflates past the message bound."""


class BoundedInflater:
    """Inflates one compressed client message, refusing to produce more than ``limit`` bytes.

    A fresh one per message (the client was told ``client_no_context_takeover``): no zlib state
    is kept between messages, so an idle connection holds none.  Output is asked of zlib at most
    one byte past what is left (``max_length``), so a zip bomb never expands in memory."""

    __slots__ = ("_zlib", "_left")

    def __init__(self, limit: int) -> None:
        self._zlib = zlib.decompressobj(-WINDOW_BITS)
        self._left = limit

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._zlib.decompress(data, self._left + 1)  # max_length 0 would mean unbounded: never 0
        except zlib.error as exc:
            raise InflateError(str(exc)) from None
        if len(out) > self._left or self._zlib.unconsumed_tail:
            raise MessageTooBig
        self._left -= len(out)
        return out

    def finish(self) -> bytes:
        """The message's last bytes: the removed sync tail put back (RFC 7692 section 7.2.2)."""
        return self.feed(_SYNC_TAIL)
