"""One client's outbound queue: frames waiting for its writer, bounded in bytes.

The queue decides, the shell writes.  ``offer`` never blocks: a frame is queued, dropped
(an UPDATE while a resync is pending, since the resync SNAPSHOT will carry its effect), or
refused as overflow, and the hub applies the configured slow-consumer policy.

SNAPSHOT bytes count toward the bound by one rule: **one SNAPSHOT is always allowed, on top of
the bound; any further SNAPSHOT must fit in the bound together with everything else pending.**
So a city snapshot (~1.35 MB, larger than the default bound) still goes into an empty queue on
connect, and a resync SNAPSHOT (queued only when the queue ran dry) always fits; UPDATEs and
replies are measured against the non-SNAPSHOT bytes, so a client reading normally is never resynced
or closed because its snapshot is still in flight.  What one client can hold is then at most
about twice the bound plus one SNAPSHOT, whatever it asks for (a requested SNAPSHOT that does not
fit is refused by the hub, not queued).

A ping's pong is a ``PONG`` frame: at most one waits in the queue, a newer one replaces it in
place (RFC 6455 5.5.3 lets an endpoint answer only the most recent ping), so a ping flood cannot
lengthen the queue.  Every decision here is O(1) per frame: nothing rebuilds the queue per frame
(``start_resync`` filters it once per resync, and does nothing while one is already owed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from attrs import define, field, frozen

class Offer(enum.Enum):
    QUEUED = "queued"
    DROPPED = "dropped"
    """An UPDATE dropped because a resync SNAPSHOT is pending for this client (not lost: superseded)."""
    OVERFLOW = "overflow"
    """The queue is past its bound; apply the slow-consumer policy."""
    CLOSED = "closed"
    """The connection is closing; nothing more is queued."""


class Delivery(enum.IntEnum):
    """How a queued frame is treated when the client falls behind (not what message it is: an
    UPDATE broadcast to a client whose SNAPSHOT does not hold its topic is ``RELIABLE``)."""

    RELIABLE = 0
    """Replies, ALERTs, pings: never dropped silently (queued, or the client is closed)."""
    DROPPABLE = 1
    """An UPDATE a resync SNAPSHOT supersedes: dropped while a resync is owed."""
    SNAPSHOT = 2
    PONG = 3
    """The answer to a client's ping: a control frame of which at most one is queued."""


# Enum members looked up once: ``Delivery.SNAPSHOT`` is a slow attribute lookup on Python 3.11.
_DROPPABLE = Delivery.DROPPABLE
_SNAPSHOT = Delivery.SNAPSHOT
_PONG = Delivery.PONG
_QUEUED = Offer.QUEUED

_NO_FRAMES: list[bytes] = ()  # type: ignore[assignment]
"""An empty queue's frames, shared: an idle client holds no list of its own (``_push`` makes one).
Never appended to: every change of ``_frames`` first checks for it."""


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
    _frames: list[bytes] = _NO_FRAMES
    """A list, not a deque: frames are only appended and taken all at once, and an empty list is
    ~10x smaller than an empty deque (it matters with many idle clients); ``_NO_FRAMES`` while
    nothing is queued, so an idle client holds none at all."""
    _kinds: list[Delivery] = field(factory=list)
    """The delivery class of each queued frame (a parallel list: no tuple allocated per delivery)."""
    queued_bytes: int = 0
    """Bytes of queued non-SNAPSHOT frames."""
    inflight_bytes: int = 0
    """Bytes of non-SNAPSHOT frames handed to the writer and not yet written."""
    queued_snapshot_bytes: int = 0
    """Bytes of queued SNAPSHOT frames."""
    inflight_snapshot_bytes: int = 0
    """Bytes of SNAPSHOT frames handed to the writer and not yet written."""
    resync_pending: bool = False
    closing: CloseRequest | None = None
    dropped_updates: int = 0
    _pong_at: int = -1
    """Index in ``_frames`` of the queued pong, -1 if none is queued."""
    _hold_at: int = -1
    """While a recovery answer is being read (``hold``): the index in ``_frames`` where it goes;
    the frames from there on wait behind it.  -1: not held."""
    _holds: int = 0
    """Recovery answers being read (a client may ask again before the first is answered): the
    hold ends with the last of them, else live messages queued after a later ask would be
    written before its answer (a gap)."""

    @property
    def pending_bytes(self) -> int:
        """Every byte this client still owes: queued plus in flight, SNAPSHOTs included."""
        return self.queued_bytes + self.inflight_bytes + self.queued_snapshot_bytes + self.inflight_snapshot_bytes

    @property
    def snapshot_bytes(self) -> int:
        """Bytes of SNAPSHOT frames queued or in flight."""
        return self.queued_snapshot_bytes + self.inflight_snapshot_bytes

    def snapshot_fits(self, size: int) -> bool:
        """One SNAPSHOT is allowed on top of the bound; a further one must fit in it."""
        held = self.queued_snapshot_bytes + self.inflight_snapshot_bytes
        return not held or self.pending_bytes + size <= self.max_bytes

    def offer(self, frame: bytes, kind: Delivery) -> Offer:
        # The fan-out's hot path, once per delivery: no object is allocated here (a tuple per
        # delivery made the garbage collector the daemon's biggest cost at 5000 clients).
        if self.closing is not None:
            return Offer.CLOSED
        if kind is _SNAPSHOT:
            if not self.snapshot_fits(len(frame)):
                return Offer.OVERFLOW
        else:
            if kind is _DROPPABLE:
                if self.resync_pending:
                    self.dropped_updates += 1
                    return Offer.DROPPED
            elif kind is _PONG and self._pong_at >= 0:
                # Only the latest ping needs its pong: replace the one still queued, in place.
                self.queued_bytes += len(frame) - len(self._frames[self._pong_at])
                self._frames[self._pong_at] = frame
                return _QUEUED
            pending = self.queued_bytes + self.inflight_bytes
            # One message always fits into an empty queue, however large.
            if pending and pending + len(frame) > self.max_bytes:
                return Offer.OVERFLOW
        self._push(frame, kind)
        return _QUEUED

    def force(self, frame: bytes, kind: Delivery = Delivery.RELIABLE) -> bool:
        """Queue a frame that must not be dropped (an ALERT or a reply after a resync started) if
        the frames waiting in the queue, not counting the batch being written, leave room."""
        if self.closing is not None:
            return False
        if self.queued_bytes and self.queued_bytes + len(frame) > self.max_bytes:
            return False
        self._push(frame, kind)
        return True

    def _push(self, frame: bytes, kind: Delivery) -> None:
        frames = self._frames
        idle = not frames
        if frames is _NO_FRAMES:
            self._frames = frames = []  # the list ``take`` used to make, made when it is needed
        if kind is _DROPPABLE:
            self.queued_bytes += len(frame)
        elif kind is _SNAPSHOT:
            self.queued_snapshot_bytes += len(frame)
        else:
            self.queued_bytes += len(frame)
            if kind is _PONG:
                self._pong_at = len(frames)
        frames.append(frame)
        self._kinds.append(kind)
        if idle:
            self.wake()

    @property
    def held(self) -> bool:
        return self._hold_at >= 0

    def hold(self) -> None:
        """Mark the point a recovery answer will be inserted at (``release``): the frames queued
        from now on are kept behind it, the ones before it are written as usual.  ``offer`` is
        untouched (only ``take`` looks at the hold), so the fan-out costs nothing more."""
        if self._hold_at < 0:
            self._hold_at = len(self._frames)
        self._holds += 1

    def release(self, frames: list[bytes], size: int | None = None, *, held: bool = True) -> None:
        """Queue a recovery answer as one unit at the hold point (at the end when not held);
        ``held``: the answer of a ``hold`` (False: one answered at once, which ends no hold).
        The hold ends when every held answer is in (the later ones go behind the earlier, still
        before every frame queued since the first hold).  It
        counts as SNAPSHOT bytes (the one SNAPSHOT allowed on top of the bound: it is bounded by
        the hub, and never refused or dropped here).  ``size``: their bytes, if known (a cached answer)."""
        at = self._hold_at if self._hold_at >= 0 else len(self._frames)
        if held and self._holds > 0:
            self._holds -= 1
        self._hold_at = at + len(frames) if self._holds > 0 and self.closing is None else -1
        if self.closing is not None or not frames:
            if self._frames:
                self.wake()  # what waited behind the hold may go now
            return
        if self._frames is _NO_FRAMES:
            self._frames = []
        self._frames[at:at] = frames
        self._kinds[at:at] = [_SNAPSHOT] * len(frames)
        self.queued_snapshot_bytes += sum(map(len, frames)) if size is None else size
        if self._pong_at >= at:
            self._pong_at += len(frames)
        self.wake()

    def start_resync(self) -> None:
        """Drop every queued UPDATE (frames already handed to the writer stay) and owe a resync.

        Once per resync: while one is owed no UPDATE is queued (``offer`` drops them), so a
        second call has nothing to drop and returns at once; a slow consumer's every further
        frame costs O(1), never a pass over its queue."""
        if self.resync_pending:
            return
        kept = [(f, k) for f, k in zip(self._frames, self._kinds) if k is not _DROPPABLE]
        if self._hold_at >= 0:
            self._hold_at -= sum(1 for k in self._kinds[: self._hold_at] if k is _DROPPABLE)
        self.dropped_updates += len(self._frames) - len(kept)
        self._frames = [f for f, _ in kept]
        self._kinds = [k for _, k in kept]
        self.queued_bytes = sum(len(f) for f, k in kept if k is not _SNAPSHOT)
        self._pong_at = self._kinds.index(_PONG) if _PONG in self._kinds else -1
        self.resync_pending = True
        self.wake()

    def request_close(self, code: int, reason: str, *, flush: bool) -> None:
        if self.closing is not None:
            return
        self.closing = CloseRequest(code, reason, flush)
        if not flush:
            self._frames = _NO_FRAMES
            self._kinds.clear()
            self.queued_bytes = self.queued_snapshot_bytes = 0
            self._pong_at = -1
            if self._hold_at >= 0:
                self._hold_at = 0
        self.wake()

    def take(self) -> list[bytes]:
        """Hand every queued frame to the writer (while held, those before the hold point);
        they count as in flight until ``written``."""
        if self._hold_at >= 0:
            return self._take_held()
        frames = self._frames
        if frames is _NO_FRAMES:
            frames = []  # the caller's to extend (a close frame goes after them)
        self._frames = _NO_FRAMES
        self._kinds.clear()
        self._pong_at = -1  # a pong in flight is not replaced any more: the next ping queues its own
        self.inflight_bytes += self.queued_bytes
        self.inflight_snapshot_bytes += self.queued_snapshot_bytes
        self.queued_bytes = self.queued_snapshot_bytes = 0
        return frames

    def _take_held(self) -> list[bytes]:
        at = self._hold_at
        if self._frames is _NO_FRAMES:
            self._frames = []
        frames, kinds = self._frames[:at], self._kinds[:at]
        del self._frames[:at], self._kinds[:at]
        self._hold_at = 0
        snapshot = sum(len(f) for f, k in zip(frames, kinds) if k is _SNAPSHOT)
        other = sum(map(len, frames)) - snapshot
        self.queued_bytes -= other
        self.queued_snapshot_bytes -= snapshot
        self.inflight_bytes += other
        self.inflight_snapshot_bytes += snapshot
        self._pong_at = self._pong_at - at if self._pong_at >= at else -1
        return frames

    def written(self) -> None:
        """The writer wrote everything it took."""
        self.inflight_bytes = self.inflight_snapshot_bytes = 0

    def __len__(self) -> int:
        return len(self._frames)
