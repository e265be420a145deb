"""The ``http-json`` Source: poll, select, publish the difference."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx
import trio
from attrs import define, field

from uipd.plugin import Publisher
from uipd.plugin_tools import Backoff, HealthLog, replace_publishable
from uipd_http_json.fetch import ConditionalFetcher, FetchError
from uipd_http_json.options import HttpJsonOptions
from uipd_http_json.selector import Selector

log = logging.getLogger(__name__)


def to_entities(items: Iterable[Any], id_field: str) -> tuple[list[dict[str, Any]], int]:
    """The items that are objects with a usable id (copied to ``id``); returns them and how many were skipped."""
    entities: list[dict[str, Any]] = []
    skipped = 0
    for item in items:
        ident = item.get(id_field) if isinstance(item, dict) else None
        if isinstance(ident, bool) or not isinstance(ident, (str, int)) or ident == "":
            skipped += 1
            continue
        entities.append(item if id_field == "id" else {**item, "id": ident})
    return entities, skipped


@define
class HttpJsonSource:
    options: HttpJsonOptions
    topics: tuple[str, ...] = field(init=False)
    selector: Selector = field(init=False)
    polls: int = field(default=0, init=False)
    """Completed polls (including 304s), for tests and debugging."""
    skipped: int = field(default=0, init=False)
    """Items skipped so far because they were not objects with an id."""
    refused: int = field(default=0, init=False)
    """Items left out so far because uipd refused them (the others were published without them)."""

    def __attrs_post_init__(self) -> None:
        self.topics = (self.options.topic,)
        self.selector = Selector.parse(self.options.selector)

    async def run(self, publisher: Publisher) -> None:
        o = self.options
        fetcher = ConditionalFetcher(o.url, o.headers, o.max_bytes, o.conditional)
        health = HealthLog(o.url, log, backoff=Backoff(o.retry_min_backoff, o.retry_max_backoff))
        async with httpx.AsyncClient(timeout=o.timeout, follow_redirects=True) as client:
            while True:
                started = trio.current_time()
                try:
                    fetched = await fetcher.fetch(client)
                except FetchError as exc:
                    await health.retry_later(str(exc))
                    continue
                health.succeeded()
                if not fetched.not_modified:
                    self._publish(publisher, fetched.document)
                publisher.ready()
                self.polls += 1
                # polls are sequential: a slow one delays the next, two never overlap
                await trio.sleep_until(started + o.interval)

    def _publish(self, publisher: Publisher, document: Any) -> None:
        entities, skipped = to_entities(self.selector.entities(document), self.options.id_field)
        if skipped:
            self.skipped += skipped
            log.warning(
                "%s: skipped %d item(s) at %s that are not objects with an %r",
                self.options.url, skipped, self.selector.text, self.options.id_field,
            )
        # an item uipd refuses is left out (one published before keeps its last good version)
        seq, bad = replace_publishable(publisher, self.options.topic, entities)
        if bad:
            self.refused += len(bad)
            log.warning(
                "%s: left out %d item(s) at %s that uipd refuses, published the others: %s%s",
                self.options.url, len(bad), self.selector.text, "; ".join(why for _, why in bad[:3]), f"; and {len(bad) - 3} more" if len(bad) > 3 else "",
            )
        if seq is not None:
            log.debug("%s: published the changes among %d entities (seq %d)", self.options.url, len(entities) - len(bad), seq)
