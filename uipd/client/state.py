"""The client's copy of the server's topic state (docs/protocol.md section 4): per topic, the
entities by their string id. Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Entity = dict[str, Any]


class TopicState:
    def __init__(self) -> None:
        self._topics: dict[str, dict[str, Entity]] = {}

    def apply_snapshot(self, data: Mapping[str, Any]) -> list[str]:
        """Replace every topic the SNAPSHOT carries (``resync`` or not); returns those topics."""
        for topic, entities in data.items():
            self._topics[topic] = {str(e["id"]): e for e in entities or () if isinstance(e, dict) and e.get("id") is not None}
        return list(data)

    def apply_update(self, topic: str, data: Iterable[Any], removed: Iterable[Any] | None = None) -> None:
        """Upsert by id (whole-entity replace), then delete the ``removed`` ids."""
        entities = self._topics.setdefault(topic, {})
        for e in data or ():
            if isinstance(e, dict) and e.get("id") is not None:
                entities[str(e["id"])] = e
        for entity_id in removed or ():
            entities.pop(str(entity_id), None)

    def retain(self, keep: Callable[[str], bool]) -> list[str]:
        """Forget the topics for which ``keep`` is false; returns them."""
        dropped = [t for t in self._topics if not keep(t)]
        for t in dropped:
            del self._topics[t]
        return dropped

    def get(self, topic: str) -> Mapping[str, Entity]:
        """The entities of a topic by id (empty for a topic without state). Do not mutate."""
        return self._topics.get(topic, {})

    def topics(self) -> list[str]:
        return list(self._topics)
