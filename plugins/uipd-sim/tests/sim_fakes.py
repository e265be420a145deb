"""Test helpers (not a conftest, so the name cannot clash with the daemon's tests): a fake
in-memory Publisher and fixed times for the pure model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

NIGHT = datetime(2025, 12, 9, 18, 0, tzinfo=UTC)  # 01:00 in Ho Chi Minh City
RUSH = datetime(2025, 12, 9, 1, 0, tzinfo=UTC)  # 08:00 in Ho Chi Minh City, a Tuesday


class FakePublisher:
    """Implements the uipd Publisher protocol in memory and records every call."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.state: dict[str, dict[str, Mapping[str, Any]]] = {t: {} for t in topics}
        self.updates: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        self.alerts: list[tuple[str, Any]] = []
        self.is_ready = False
        self.seq = 0
        self.ready_after: set[str] = set()
        """Topics that had state when ready() was called."""

    def _check(self, topic: str) -> None:
        if topic not in self.state:
            raise ValueError(f"undeclared topic {topic!r}")

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int:
        self._check(topic)
        entities, removed = list(entities), [str(r) for r in removed]
        for e in entities:
            if not isinstance(e, dict) or not isinstance(e.get("id"), (str, int)):
                raise ValueError("entity must be a dict with an id")
            self.state[topic][str(e["id"])] = e
        for r in removed:
            self.state[topic].pop(r, None)
        self.seq += 1
        self.updates.append((topic, entities, removed))
        return self.seq

    def alert(self, topic: str, data: Any) -> int:
        self._check(topic)
        self.seq += 1
        self.alerts.append((topic, data))
        return self.seq

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        self._check(topic)
        new = {str(e["id"]): e for e in entities}
        changed = [e for k, e in new.items() if self.state[topic].get(k) != e]
        removed = [k for k in self.state[topic] if k not in new]
        if not changed and not removed:
            return None
        return self.update(topic, changed, removed)

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        return self.state[topic]

    def ready(self) -> None:
        self.is_ready = True
        self.ready_after = {t for t, s in self.state.items() if s}
