"""A topic's recent messages, kept as the frames that were sent (PROTOCOL.md section 8).

A reconnecting client names the last seq it applied; when the history still holds every message
after it, they are replayed byte for byte (the very frame objects the live clients were sent: no
re-encoding, no copy) instead of a snapshot.  History is bounded by count (``size``) and age
(``ttl``, monotonic seconds); ``size`` 0 turns it off.  Entries are contiguous in seq: a gap (a
node that reloaded its state, a seq that jumped) clears what was kept, so ``after`` never answers
with a replay that misses a message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice

from attrs import define, field, frozen


@frozen(slots=True)
class HistoryEntry:
    seq: int
    frame: bytes
    """The message's frame as sent to live clients."""
    alert: bool
    at: float
    """Monotonic time it was published (for ``ttl``)."""


@define
class TopicHistory:
    size: int = 0
    """Messages kept at most; 0: no history."""
    ttl: float = 0.0
    """Seconds a message is kept at most."""
    max_bytes: int = 0
    """Bytes of frames kept at most (the oldest go first; the newest is always kept); 0: no bound.
    A count alone does not bound memory: a topic whose source replaces 400 KB of state per
    message would hold 400 MB at the default size."""
    _entries: deque[HistoryEntry] = field(factory=deque)
    bytes: int = 0
    """Bytes of the frames held."""

    @property
    def messages(self) -> int:
        return len(self._entries)

    @property
    def first_seq(self) -> int | None:
        return self._entries[0].seq if self._entries else None

    @property
    def last_seq(self) -> int | None:
        return self._entries[-1].seq if self._entries else None

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def configure(self, size: int, ttl: float, max_bytes: int = 0) -> None:
        """New bounds (a reload): applied at once to what is kept."""
        self.size, self.ttl, self.max_bytes = size, ttl, max_bytes
        if not size:
            self.clear()
        else:
            self._trim_count()

    def append(self, seq: int, frame: bytes, alert: bool, now: float) -> None:
        if not self.size:
            return
        entries = self._entries
        if entries and entries[-1].seq != seq - 1:
            self.clear()  # a gap: what is kept could not be replayed as one contiguous run
        entries.append(HistoryEntry(seq, frame, alert, now))
        self.bytes += len(frame)
        self._trim_count()
        self.expire(now)

    def _trim_count(self) -> None:
        entries = self._entries
        while len(entries) > self.size:
            self.bytes -= len(entries.popleft().frame)
        if self.max_bytes:
            while self.bytes > self.max_bytes and len(entries) > 1:
                self.bytes -= len(entries.popleft().frame)

    def expire(self, now: float) -> None:
        """Drop the entries older than ``ttl``."""
        entries = self._entries
        oldest = now - self.ttl
        while entries and entries[0].at < oldest:
            self.bytes -= len(entries.popleft().frame)

    def after(self, seq: int, now: float) -> list[HistoryEntry] | None:
        """Every entry with a seq above ``seq``, if the history reaches back to ``seq + 1`` (an
        empty list when ``seq`` is the last kept, or nothing is kept after it but ``seq`` is the
        head: the caller compares with the topic's seq); None when it does not reach back."""
        if not self.size:
            return None
        self.expire(now)
        entries = self._entries
        if not entries:
            return None
        first = entries[0].seq
        if first > seq + 1:
            return None
        start = seq + 1 - first
        if start >= len(entries):
            return []
        if start == 0:
            return list(entries)
        tail = list(islice(reversed(entries), len(entries) - start))  # from the right: O(replay), not O(history)
        tail.reverse()
        return tail

    def backfill(self, entries: Iterable[HistoryEntry]) -> None:
        """Prepend older entries (read from elsewhere, e.g. Redis), oldest first.  Only the run
        contiguous with what is kept is taken, and only within ``size``."""
        if not self.size:
            return
        older = list(entries)
        kept = self._entries
        if kept:
            first = kept[0].seq
            run: list[HistoryEntry] = []
            for entry in reversed(older):
                expected = first - 1 - len(run)
                if entry.seq > expected:
                    continue  # already held
                if entry.seq != expected:
                    break
                run.append(entry)
            run.reverse()
        else:
            run = []
            for entry in older:
                if run and entry.seq != run[-1].seq + 1:
                    run = []
                run.append(entry)
        room = self.size - len(kept)
        if room <= 0 or not run:
            return
        run = run[-room:]
        kept.extendleft(reversed(run))
        self.bytes += sum(len(e.frame) for e in run)
        self._trim_count()  # (the byte bound drops the oldest: what was just backfilled goes first)
