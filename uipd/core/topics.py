"""Per-topic state (docs/protocol.md sections 4, 8): entities by id, the topic's seq and epoch, its
history, and encoded snapshots.

A topic's snapshot section (the JSON list of its entities) is encoded once per change of its
state; whole SNAPSHOT frames are cached per topic set, so a storm of new clients costs one
encoding, not one per connection.

The frame cache has two tiers, so that no client can evict the frames every client needs.  The
sets the server itself asks for (each connecting client's set, resyncs) are kept in the main
tier (``max_cached_sets``); sets a client chose in a ``snapshot`` request or a ``subscribe``
with ``snapshot`` go to a small tier of their own (``max_requested_sets``) and only ever evict
each other.  A request is served from either tier.  A frame is reused while the state is
unchanged and it is young (``snapshot_max_age``): at the first call after any change of state
both tiers are emptied (their frames can never be served again), and a full tier first drops its
expired frames before it evicts its least recently used one.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from uipd.core import wire
from uipd.core.history import TopicHistory

_epochs = random.Random()  # seeded from os.urandom; an epoch names a run of seqs, it grants nothing
_EPOCH_ALPHABET = string.ascii_letters + string.digits


def new_epoch(rng: random.Random | None = None) -> str:
    """A fresh epoch (PROTOCOL.md section 8): 12 characters, ~71 bits."""
    return "".join((rng or _epochs).choices(_EPOCH_ALPHABET, k=12))


@define
class TopicState:
    name: str
    entities: dict[str, Any] = field(factory=dict)
    """Current entities by their string id, in first-seen order."""
    seq: int = 0
    """Number of UPDATE/ALERT messages published on this topic (the last ``seq`` sent)."""
    epoch: str = field(factory=new_epoch)
    """The run of ``seq`` numbering (made at start by this node, or the cluster's)."""
    history: TopicHistory = field(factory=TopicHistory)
    """Its last messages as sent (off until the hub configures it)."""
    _section: bytes | None = None

    def apply(self, upserts: Iterable[tuple[str, Any]], removed: Iterable[str]) -> None:
        for key, entity in upserts:
            self.entities[key] = entity
        for key in removed:
            self.entities.pop(key, None)
        self._section = None

    def section(self) -> bytes:
        """This topic's snapshot section, encoded once per change of state."""
        if self._section is None:
            self._section = wire.dumps(list(self.entities.values()))
        return self._section


@define
class _CachedSnapshot:
    frame: bytes
    built_at: float


_SnapshotKey = tuple[tuple[str, ...], bool]


@define
class TopicTable:
    """Every topic the server offers, in their configured order, and the snapshot cache."""

    topics: dict[str, TopicState]
    snapshot_max_age: float = 1.0
    """A cached SNAPSHOT frame is reused for this many seconds at most, so its timestamp stays fresh."""
    max_cached_sets: int = 32
    """Frames kept for the sets the server asks for (connects, resyncs)."""
    max_requested_sets: int = 8
    """Frames kept for the sets clients ask for; these never evict the others."""
    version: int = 0
    """Bumped on every change of any topic's state or seq (a SNAPSHOT carries positions); cached
    snapshots of older versions are stale."""
    _cache: dict[_SnapshotKey, _CachedSnapshot] = field(factory=dict)
    _requested: dict[_SnapshotKey, _CachedSnapshot] = field(factory=dict)
    _cache_version: int = 0
    """The state version the cached frames were built for."""

    @classmethod
    def of(cls, names: Sequence[str]) -> TopicTable:
        return cls({name: TopicState(name) for name in names})

    @property
    def names(self) -> list[str]:
        return list(self.topics)

    def __contains__(self, name: object) -> bool:
        return name in self.topics

    def get(self, name: str) -> TopicState | None:
        return self.topics.get(name)

    def apply(self, name: str, upserts: Iterable[tuple[str, Any]], removed: Iterable[str]) -> None:
        self.topics[name].apply(upserts, removed)
        self.version += 1

    def add(self, name: str) -> bool:
        """Offer a new, empty topic (after the others); False if it is offered already."""
        if name in self.topics:
            return False
        self.topics[name] = TopicState(name)
        self.version += 1
        return True

    def record(self, state: TopicState, seq: int, frame: bytes | None, alert: bool, now: float) -> None:
        """A message of ``state``'s topic was sent: its seq, and its frame kept in history (None:
        not kept).  Cached SNAPSHOT frames hold positions, so any seq change makes them stale."""
        state.seq = seq
        if frame is not None:
            state.history.append(seq, frame, alert, now)
        self.version += 1

    def positions(self, names: Iterable[str]) -> dict[str, tuple[int, str]]:
        topics = self.topics
        return {n: (topics[n].seq, topics[n].epoch) for n in names}

    def state_of(self, name: str) -> Mapping[str, Any]:
        return self.topics[name].entities

    def snapshot_cost(self, names: Sequence[str]) -> int:
        """The bytes a SNAPSHOT of ``names`` costs to send, without building it: its topics'
        sections (the frame adds a few dozen bytes of envelope)."""
        return sum(len(self.topics[n].section()) for n in names)

    def snapshot_frame(self, names: Sequence[str], now: float, ts: str, *, resync: bool = False, requested: bool = False) -> bytes:
        """A framed SNAPSHOT of ``names``, reused while the state is unchanged and the frame young.

        ``requested``: a set a client chose (cached in the requested tier, see the module)."""
        if self._cache_version != self.version:
            # the state changed: frames of older versions can never be served again
            self._cache.clear()
            self._requested.clear()
            self._cache_version = self.version
        key = (tuple(names), resync)
        for tier in (self._cache, self._requested):
            cached = tier.pop(key, None)
            if cached is not None and now - cached.built_at <= self.snapshot_max_age:
                tier[key] = cached  # back at the end: the most recently used
                return cached.frame
        frame = wire.snapshot_frame(
            ((n, self.topics[n].section()) for n in names), ts, resync=resync, positions=self.positions(names)
        )
        if requested:
            self._store(self._requested, self.max_requested_sets, key, frame, now)
        else:
            self._store(self._cache, self.max_cached_sets, key, frame, now)
        return frame

    def _store(self, tier: dict[_SnapshotKey, _CachedSnapshot], limit: int, key: _SnapshotKey, frame: bytes, now: float) -> None:
        if len(tier) >= limit:
            for old in [k for k, c in tier.items() if now - c.built_at > self.snapshot_max_age]:
                del tier[old]  # expired: never served again
            if len(tier) >= limit:
                del tier[next(iter(tier))]  # the least recently used
        tier[key] = _CachedSnapshot(frame, now)
