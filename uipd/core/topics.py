"""Per-topic state (PROTOCOL.md section 4): entities by id, the topic's seq, and encoded snapshots.

A topic's snapshot section (the JSON list of its entities) is encoded once per change of its
state; whole SNAPSHOT frames are cached per topic set, so a storm of new clients costs one
encoding, not one per connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from uipd.core import wire


@define
class TopicState:
    name: str
    entities: dict[str, Any] = field(factory=dict)
    """Current entities by their string id, in first-seen order."""
    seq: int = 0
    """Number of UPDATE/ALERT messages published on this topic (the last ``seq`` sent)."""
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
    version: int
    built_at: float


@define
class TopicTable:
    """Every topic the server offers, in their configured order, and the snapshot cache."""

    topics: dict[str, TopicState]
    snapshot_max_age: float = 1.0
    """A cached SNAPSHOT frame is reused for this many seconds at most, so its timestamp stays fresh."""
    max_cached_sets: int = 32
    version: int = 0
    """Bumped on every change of any topic's state; cached snapshots of older versions are stale."""
    _cache: dict[tuple[tuple[str, ...], bool], _CachedSnapshot] = field(factory=dict)

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

    def state_of(self, name: str) -> Mapping[str, Any]:
        return self.topics[name].entities

    def snapshot_frame(self, names: Sequence[str], now: float, ts: str, *, resync: bool = False) -> bytes:
        """A framed SNAPSHOT of ``names``, reused while the state is unchanged and the frame young."""
        key = (tuple(names), resync)
        cached = self._cache.get(key)
        if cached is not None and cached.version == self.version and now - cached.built_at <= self.snapshot_max_age:
            return cached.frame
        frame = wire.snapshot_frame(((n, self.topics[n].section()) for n in names), ts, resync=resync)
        if cached is not None and cached.version != self.version:
            # the state changed: frames of older versions can never be served again
            self._cache = {k: c for k, c in self._cache.items() if c.version == self.version}
        if len(self._cache) >= self.max_cached_sets and key not in self._cache:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = _CachedSnapshot(frame, self.version, now)
        return frame
