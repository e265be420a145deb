"""The Publisher a running source (or the HTTP API) publishes through; one path for every publish."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from time import perf_counter
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
    observe: Callable[[float], None] = lambda seconds: None
    """Told the seconds each ``Hub.publish`` took (the metrics' publish-time histogram)."""
    broker: Any = None
    """The cluster broker every publish goes through (``uipd.cluster``); None: straight to the hub."""
    ready_flag: bool = field(default=False, init=False)
    _shadow: dict[str, dict[str, Any]] = field(factory=dict, init=False)
    """In a cluster, what this publisher expects each topic to hold once its queued publications
    came back from Redis: ``replace`` diffs against it, not against the not-yet-updated hub."""

    def submit(self, pub: Publication) -> PublishResult:
        if self.topics is not None and pub.topic not in self.topics:
            raise PublishError("forbidden_topic", f"this source does not provide topic {pub.topic!r}")
        started = perf_counter()
        result = self.hub.publish(pub, self.now()) if self.broker is None else self.broker.submit(pub)
        self.observe(perf_counter() - started)
        shadow = self._shadow.get(pub.topic) if pub.topic is not None and pub.kind == "UPDATE" else None
        if shadow is not None:
            for key, entity in pub.upserts:
                shadow[key] = entity
            for key in pub.removed:
                shadow.pop(key, None)
        self.ready_flag = True
        self.on_publish()
        return result

    async def confirm(self, pub: Publication) -> PublishResult:
        """Publish and wait for the cluster's seq (the HTTP API's publish); without a cluster broker
        this is ``submit``."""
        if self.broker is None or self.broker.kind == "memory":
            return self.submit(pub)
        if self.topics is not None and pub.topic not in self.topics:
            raise PublishError("forbidden_topic", f"this source does not provide topic {pub.topic!r}")
        result: PublishResult = await self.broker.publish(pub)
        self.on_publish()
        return result

    # -- uipd.plugin.Publisher --------------------------------------------------------------------

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int | None:
        return self.submit(publish.update(topic, entities, removed)).seq

    def alert(self, topic: str, data: Any) -> int | None:
        return self.submit(publish.alert(topic, data)).seq

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        current = self.current(topic)
        if self.broker is not None and self.broker.kind != "memory":
            current = self._shadow.setdefault(topic, dict(current))
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
