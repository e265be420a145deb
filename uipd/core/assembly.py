"""Reassembly of a client's fragmented text message, bounded in bytes and in fragments.

The frame layer (wsproto) hands a text message over in pieces: one per frame of a fragmented
message, and more when a frame's bytes arrive over several reads.  The pieces are gathered as
UTF-8 in one ``bytearray``, so what a message holds in memory is what is counted against
``max_message_bytes`` (one Python string per piece cost ~80 bytes per one-character piece), and
the frames are counted against ``max_fragments``: empty continuation frames count too, so a
message that never completes is bounded.  Over either bound the connection is closed 1009
(RFC 6455: a message too big to process).

Only a message in progress has an assembler; a message in one frame, read at once, needs none.
"""

from __future__ import annotations

import enum

from attrs import define, field

from uipd.core import closecodes
from uipd.core.closecodes import Close


class Piece(enum.Enum):
    """What one piece of a message means for the connection."""

    PARTIAL = "partial"
    """More of the same frame is to come."""
    FRAGMENT = "fragment"
    """A frame ended and the message goes on: it counts against the rate limit like a message."""
    COMPLETE = "complete"
    """The message is whole: ``text()``."""
    TOO_BIG = "too_big"
    """Over ``max_message_bytes``: close 1009."""
    TOO_MANY_FRAGMENTS = "too_many_fragments"
    """Over ``max_fragments`` frames: close 1009."""


CLOSES: dict[Piece, Close] = {
    Piece.TOO_BIG: closecodes.MESSAGE_TOO_BIG,
    Piece.TOO_MANY_FRAGMENTS: closecodes.TOO_MANY_FRAGMENTS,
}
"""The close for each verdict that ends the connection."""


def over_limit(text: str, max_bytes: int) -> bool:
    """Whether ``text`` is more than ``max_bytes`` of UTF-8.  Characters <= UTF-8 bytes <= 4 x
    characters: it is encoded only when that matters."""
    return len(text) * 4 > max_bytes and len(text.encode()) > max_bytes


@define
class MessageAssembler:
    max_bytes: int
    max_fragments: int
    """Frames one message may have."""
    _buffer: bytearray = field(factory=bytearray)
    frames: int = 0
    """Frames of this message that ended so far."""

    def feed(self, piece: str, frame_finished: bool, message_finished: bool) -> Piece:
        data = piece.encode()
        if len(self._buffer) + len(data) > self.max_bytes:
            return Piece.TOO_BIG
        self._buffer += data
        if message_finished:
            return Piece.COMPLETE
        if not frame_finished:
            return Piece.PARTIAL
        self.frames += 1
        # This frame was not the last: the message will have more than ``frames`` frames.
        if self.frames >= self.max_fragments:
            return Piece.TOO_MANY_FRAGMENTS
        return Piece.FRAGMENT

    def text(self) -> str:
        """The whole message (valid UTF-8: the frame layer checked it)."""
        return self._buffer.decode()

    @property
    def held_bytes(self) -> int:
        return len(self._buffer)
