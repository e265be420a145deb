"""The Publisher a running source (or the HTTP API) publishes through; one path for every publish."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from time import perf_counter
from types import MappingProxyType
from typing import Any

from attrs import define, field

from uipd.core import publish
from uipd.core.clock import Instant
from uipd.core.errors import PublishError
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication
from uipd.plugin_tools import RepeatLog

log = logging.getLogger(__name__)


@define
class HubPublisher:
    """Publishes into the hub with the current time; optionally restricted to some topics."""

    hub: Hub
    now: Callable[[], Instant]
    topics: Collection[str] | None = None
    """The topics this publisher may publish to (a source's declared topics); None: any."""
    observe: Callable[[float], None] = lambda seconds: None
    """Told the seconds each ``Hub.publish`` took (the metrics' publish-time histogram)."""
    broker: Any = None
    """The cluster broker every publish goes through (``uipd.cluster``); None: straight to the hub."""
    source: str = ""
    """The source publishing through this (named in the log of a refused publish); "" for the HTTP
    API, which answers a refusal with a 400 instead."""
    refusal_log_interval: float = 10.0
    """After the first refused publish (logged in full), at most one summary line per this many seconds."""
    refused: Counter[str] = field(factory=Counter, init=False)
    """A source's refused publishes by error code (``uipd_publishes_refused_total``)."""
    refusals: RepeatLog = field(init=False)
    """Logs them: the daemon flushes it periodically so that the end of a burst is logged too."""
    ready_flag: bool = field(default=False, init=False)
    _shadow: dict[str, dict[str, Any]] = field(factory=dict, init=False)
    """In a cluster, what this publisher expects each topic to hold once its queued publications
    came back from Redis: ``replace`` diffs against it, not against the not-yet-updated hub.  A
    topic's entry goes once one of its publications is lost (see :meth:`forget`)."""

    def __attrs_post_init__(self) -> None:
        self.refusals = RepeatLog(f"source {self.source or '?'}", log, self.refusal_log_interval, events="publishes refused", level=logging.ERROR)

    def forget(self, topic: str | None) -> None:
        """Stop expecting anything of ``topic`` beyond the hub's state: one of its publications was
        refused, not sent, fenced off or not answered (the broker calls this), or the source starts
        over.  The next ``replace`` then diffs against what the cluster really holds and sends again
        what did not land, instead of believing it did and never sending it.  None: every topic."""
        if topic is None:
            self._shadow.clear()
        else:
            self._shadow.pop(topic, None)

    def _check_topic(self, topic: str | None) -> None:
        if self.topics is not None and topic not in self.topics:
            raise PublishError("forbidden_topic", f"this source does not provide topic {topic!r}")

    def submit(self, pub: Publication) -> PublishResult:
        self._check_topic(pub.topic)
        started = perf_counter()
        if self.broker is None:
            result = self.hub.publish(pub, self.now())
        else:
            result = self.broker.submit(pub, self.source, partial(self.forget, pub.topic))
        self.observe(perf_counter() - started)
        shadow = self._shadow.get(pub.topic) if pub.topic is not None and pub.kind == "UPDATE" else None
        if shadow is not None:
            for key, entity in pub.upserts:
                shadow[key] = entity
            for key in pub.removed:
                shadow.pop(key, None)
        self.ready_flag = True
        return result

    async def confirm(self, pub: Publication) -> PublishResult:
        """Publish and wait for the cluster's seq (the HTTP API's publish); without a cluster broker
        this is ``submit``."""
        if self.broker is None or self.broker.kind == "memory":
            return self.submit(pub)
        self._check_topic(pub.topic)
        result: PublishResult = await self.broker.publish(pub)
        return result

    # -- uipd.plugin.Publisher --------------------------------------------------------------------

    @contextmanager
    def _logged_refusal(self, topic: str) -> Iterator[None]:
        """A source's refused publish raises to the source (a ValueError: it may catch it and go on)
        and is counted and logged here, so that it is seen even when the source swallows it; a
        source publishing garbage many times a second gets a summary line per interval, not a
        line per publish."""
        try:
            yield
        except PublishError as err:
            self.refused[err.error_code] += 1
            self.refusals.report(f"publish to {topic!r} refused: {err.message}")
            raise

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int | None:
        with self._logged_refusal(topic):
            return self.submit(publish.update(topic, entities, removed)).seq

    def alert(self, topic: str, data: Any) -> int | None:
        with self._logged_refusal(topic):
            return self.submit(publish.alert(topic, data)).seq

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        with self._logged_refusal(topic):
            current = self.current(topic)
            if self.broker is not None and self.broker.kind != "memory":
                current = self._shadow.setdefault(topic, dict(current))
            # Checked and copied first, so the comparison is between the hub's copies: a source
            # that mutated an entity it published before gets the difference published.
            wanted = dict(publish.update(topic, entities).upserts)
            changed = [e for key, e in wanted.items() if current.get(key) != e]
            removed = [key for key in current if key not in wanted]
            if not changed and not removed:
                return None
            return self.submit(publish.update_of_own(topic, changed, removed)).seq

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        self._check_topic(topic)
        return MappingProxyType(self.hub.topics.state_of(topic))

    def ready(self) -> None:
        self.ready_flag = True
