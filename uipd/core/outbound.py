"""One client's outbound queue: frames waiting for its writer, bounded in bytes.

The queue decides, the shell writes.  ``offer`` never blocks: a frame is queued, dropped
(an UPDATE while a resync is pending, since the resync SNAPSHOT will carry its effect), or
refused as overflow, and the hub applies the configured slow-consumer policy.

SNAPSHOT frames are not counted against the byte bound: a city snapshot (~1.35 MB) is larger
than the default bound, and counting it would resync every client whose snapshot is still in
flight when the next UPDATE arrives.  They are shared, cached frames (the queue holds a
reference, not a copy), and at most ``MAX_PENDING_SNAPSHOTS`` may wait for one client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from attrs import define, field, frozen

MAX_PENDING_SNAPSHOTS = 4


class Offer(enum.Enum):
    QUEUED = "queued"
    DROPPED = "dropped"
    """An UPDATE dropped because a resync SNAPSHOT is pending for this client (not lost: superseded)."""
    OVERFLOW = "overflow"
    """The queue is past its bound; apply the slow-consumer policy."""
    CLOSED = "closed"
    """The connection is closing; nothing more is queued."""


class Kind(enum.IntEnum):
    CONTROL = 0
    """Replies, ALERTs, pings: never dropped silently."""
    UPDATE = 1
    """Droppable: a resync SNAPSHOT replaces it."""
    SNAPSHOT = 2


# Enum members looked up once: ``Kind.SNAPSHOT`` is a slow attribute lookup on Python 3.11.
_UPDATE = Kind.UPDATE
_SNAPSHOT = Kind.SNAPSHOT
_QUEUED = Offer.QUEUED


@frozen
class CloseRequest:
    code: int
    reason: str
    flush: bool
    """Send what is queued before the close frame (shutdown, rate limit) or drop it (slow consumer)."""


@define
class OutboundQueue:
    max_bytes: int
    wake: Callable[[], None] = lambda: None
    """Called when the writer has something new to do (injected by the shell)."""
    _frames: list[bytes] = field(factory=list)
    """A list, not a deque: frames are only appended and taken all at once, and an empty list is
    ~10x smaller than an empty deque (it matters with many idle clients)."""
    _kinds: list[Kind] = field(factory=list)
    """The kind of each queued frame (a parallel list: no tuple allocated per delivery)."""
    queued_bytes: int = 0
    """Bytes of queued non-SNAPSHOT frames."""
    inflight_bytes: int = 0
    """Bytes of non-SNAPSHOT frames handed to the writer and not yet written."""
    snapshots_pending: int = 0
    resync_pending: bool = False
    closing: CloseRequest | None = None
    dropped_updates: int = 0

    @property
    def pending_bytes(self) -> int:
        """Bounded bytes this client still owes: queued plus in flight (SNAPSHOTs not counted)."""
        return self.queued_bytes + self.inflight_bytes

    def offer(self, frame: bytes, kind: Kind) -> Offer:
        # The fan-out's hot path, once per delivery: no object is allocated here (a tuple per
        # delivery made the garbage collector the daemon's biggest cost at 5000 clients).
        if self.closing is not None:
            return Offer.CLOSED
        if kind is _SNAPSHOT:
            if self.snapshots_pending >= MAX_PENDING_SNAPSHOTS:
                return Offer.OVERFLOW
        else:
            if kind is _UPDATE and self.resync_pending:
                self.dropped_updates += 1
                return Offer.DROPPED
            pending = self.queued_bytes + self.inflight_bytes
            # One message always fits into an empty queue, however large.
            if pending and pending + len(frame) > self.max_bytes:
                return Offer.OVERFLOW
        self._push(frame, kind)
        return _QUEUED

    def force(self, frame: bytes) -> bool:
        """Queue a frame that must not be dropped (an ALERT after a resync started) if the frames
        waiting in the queue, not counting the batch being written, leave room."""
        if self.closing is not None:
            return False
        if self.queued_bytes and self.queued_bytes + len(frame) > self.max_bytes:
            return False
        self._push(frame, Kind.CONTROL)
        return True

    def _push(self, frame: bytes, kind: Kind) -> None:
        idle = not self._frames
        self._frames.append(frame)
        self._kinds.append(kind)
        if kind is _SNAPSHOT:
            self.snapshots_pending += 1
        else:
            self.queued_bytes += len(frame)
        if idle:
            self.wake()

    def start_resync(self) -> None:
        """Drop every queued UPDATE (frames already handed to the writer stay) and owe a resync."""
        kept = [(f, k) for f, k in zip(self._frames, self._kinds) if k is not _UPDATE]
        self.dropped_updates += len(self._frames) - len(kept)
        self._frames = [f for f, _ in kept]
        self._kinds = [k for _, k in kept]
        self.queued_bytes = sum(len(f) for f, k in kept if k is not _SNAPSHOT)
        self.resync_pending = True
        self.wake()

    def request_close(self, code: int, reason: str, *, flush: bool) -> None:
        if self.closing is not None:
            return
        self.closing = CloseRequest(code, reason, flush)
        if not flush:
            self._frames.clear()
            self._kinds.clear()
            self.queued_bytes = 0
        self.wake()

    def take(self) -> list[bytes]:
        """Hand every queued frame to the writer; they count as in flight until ``written``."""
        frames = self._frames
        self._frames = []
        self._kinds.clear()
        self.inflight_bytes += self.queued_bytes
        self.queued_bytes = 0
        return frames

    def written(self) -> None:
        """The writer wrote everything it took."""
        self.inflight_bytes = 0
        self.snapshots_pending = self._kinds.count(_SNAPSHOT) if self._kinds else 0

    def __len__(self) -> int:
        return len(self._frames)
