"""The Publisher a running source (or the HTTP API) publishes through; one path for every publish."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from attrs import define, field

from uipd.core import publish
from uipd.core.clock import Instant
from uipd.core.errors import PublishError
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication, entity_key


@define
class HubPublisher:
    """Publishes into the hub with the current time; optionally restricted to some topics."""

    hub: Hub
    now: Callable[[], Instant]
    topics: Collection[str] | None = None
    """The topics this publisher may publish to (a source's declared topics); None: any."""
    on_publish: Callable[[], None] = lambda: None
    ready_flag: bool = field(default=False, init=False)

    def submit(self, pub: Publication) -> PublishResult:
        if self.topics is not None and pub.topic not in self.topics:
            raise PublishError("forbidden_topic", f"this source does not provide topic {pub.topic!r}")
        result = self.hub.publish(pub, self.now())
        self.ready_flag = True
        self.on_publish()
        return result

    # -- uipd.plugin.Publisher --------------------------------------------------------------------

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int:
        seq = self.submit(publish.update(topic, entities, removed)).seq
        assert seq is not None
        return seq

    def alert(self, topic: str, data: Any) -> int:
        seq = self.submit(publish.alert(topic, data)).seq
        assert seq is not None
        return seq

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        current = self.current(topic)
        wanted = {}
        for entity in publish.check_entities(list(entities)):
            wanted[entity_key(entity)] = entity
        changed = [e for key, e in wanted.items() if current.get(key) != e]
        removed = [key for key in current if key not in wanted]
        if not changed and not removed:
            return None
        return self.update(topic, changed, removed)

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        if self.topics is not None and topic not in self.topics:
            raise PublishError("forbidden_topic", f"this source does not provide topic {topic!r}")
        return MappingProxyType(self.hub.topics.state_of(topic))

    def ready(self) -> None:
        self.ready_flag = True
