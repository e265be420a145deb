"""The ``ngsi-ld`` Source: polls each mapped type, publishes only what changed and what went away,
optionally keeps an NGSI-LD subscription whose notifications arrive on ``/sources/NAME/notify``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import trio
from attrs import define, field

from uipd.plugin import HttpHandler, HttpRequest, HttpResponse, Publisher
from uipd.plugin_tools import Backoff, HealthLog, parse_json, publishable
from uipd_ngsi_ld.alerts import AlertTracker, alert_data
from uipd_ngsi_ld.broker import Broker, BrokerError
from uipd_ngsi_ld.entities import entity_id, to_uipd, version_key
from uipd_ngsi_ld.options import EntityMapping, NgsiLdOptions

log = logging.getLogger(__name__)


@define
class TopicState:
    """What the source knows of one mapped type between polls."""

    mapping: EntityMapping
    alerts: AlertTracker
    versions: dict[str, str] = field(factory=dict)
    """Entity id -> version key of what was last published."""
    notified: set[str] | None = None
    """While a poll of this type is in flight: ids a notification updated meanwhile (the poll's
    older listing must not overwrite them, nor count them as deleted)."""
    refused: dict[str, str] = field(factory=dict)
    """Entity id -> version key of an entity uipd refused (or the mapping could not read): not
    tried again, nor reported again, until its version changes."""


@define
class NgsiLdSource:
    options: NgsiLdOptions
    topics: tuple[str, ...] = field(init=False)
    polls: int = field(default=0, init=False)
    """Completed poll cycles (every type listed), for tests and debugging."""
    notifications: int = field(default=0, init=False)
    skipped: int = field(default=0, init=False)
    """Entities ignored because they had no usable id or an unmapped type."""
    refused: int = field(default=0, init=False)
    """Entities left out because uipd refused them (or the mapping failed on them): the others
    were published without them."""
    subscription: str | None = field(default=None, init=False)
    """The URL of the live subscription in push mode."""
    _states: dict[str, TopicState] = field(factory=dict, init=False)
    _publisher: Publisher | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.topics = tuple(m.topic for m in self.options.entities)

    @property
    def normalized(self) -> bool:
        return self.options.format == "normalized"

    # -- the task -----------------------------------------------------------------------------

    async def run(self, publisher: Publisher) -> None:
        o = self.options
        # fresh per run: what a previous run published is the baseline, so nothing is re-sent
        # and entities already matching an alert rule do not alert again
        self._states = {}
        for m in o.entities:
            tracker = AlertTracker(m.alerts)
            tracker.seed(publisher.current(m.topic).values())
            self._states[m.type] = TopicState(m, tracker)
        self._publisher = publisher
        health = HealthLog(f"NGSI-LD broker {o.base_url}", log, backoff=Backoff(o.retry_min_backoff, o.retry_max_backoff))
        sub_health = HealthLog(f"NGSI-LD subscription at {o.base_url}", log)
        try:
            async with httpx.AsyncClient(timeout=o.timeout) as client:
                broker = Broker(client, o)
                try:
                    while True:
                        started = trio.current_time()
                        if o.push:
                            try:
                                await self._keep_subscription(broker)
                                sub_health.succeeded()
                            except BrokerError as exc:
                                sub_health.failed(str(exc), o.interval)
                        try:
                            for state in self._states.values():
                                await self._poll(broker, state, publisher)
                        except BrokerError as exc:
                            await health.retry_later(str(exc))
                            continue
                        health.succeeded()
                        publisher.ready()
                        self.polls += 1
                        # sequential: a poll slower than the interval delays the next, never overlaps it
                        await trio.sleep_until(started + o.interval)
                finally:
                    if self.subscription is not None:
                        await self._drop_subscription(broker)
        finally:
            self._publisher = None
            for state in self._states.values():
                state.notified = None

    async def _poll(self, broker: Broker, state: TopicState, publisher: Publisher) -> None:
        state.notified = set()
        try:
            listing = await broker.list_entities(state.mapping.type)
        finally:
            notified, state.notified = state.notified, None
        self._apply(publisher, state, listing, complete=True, keep=notified or set())

    # -- applying entities ----------------------------------------------------------------------

    def _apply(
        self, publisher: Publisher, state: TopicState, raw: Iterable[Any], *, complete: bool, keep: set[str] = frozenset(), removed: Iterable[str] = ()
    ) -> tuple[int, list[str]]:
        """Publish the entities of ``raw`` that changed; with ``complete`` (a whole listing), also
        remove what is no longer listed.  ``keep``: ids to leave alone.  Returns the entities sent
        and why each entity left out was (one that uipd refuses, or that the mapping cannot read,
        is reported and left out: it never holds back the others)."""
        m = state.mapping
        current = publisher.current(m.topic)
        changed: list[dict[str, Any]] = []
        refused: list[tuple[str, str, str]] = []
        seen: dict[str, str] = {}
        for entity in raw:
            ident = entity_id(entity)
            if ident is None:
                self.skipped += 1
                continue
            try:
                version = version_key(entity, m.timestamp_field, self.normalized)
                seen[ident] = version
                if ident in keep or state.refused.get(ident) == version or (state.versions.get(ident) == version and ident in current):
                    continue
                mapped = to_uipd(entity, m, self.normalized)
            except Exception as exc:  # whatever the broker sent, one entity fails alone
                seen.setdefault(ident, "")  # still listed: not to be taken for a deletion
                refused.append((ident, seen[ident], f"entity {ident!r} cannot be mapped ({type(exc).__name__}: {exc})"))
                continue
            if current.get(ident) != mapped:
                changed.append(mapped)
        gone = set(removed)
        if complete:
            gone |= {ident for ident in current if ident not in seen and ident not in keep}
            # versions of kept ids stay as the notification left them
            state.versions = {**{i: v for i, v in state.versions.items() if i in keep}, **{i: v for i, v in seen.items() if i not in keep}}
        else:
            state.versions.update(seen)
        gone &= set(current)
        for ident in gone:
            state.versions.pop(ident, None)
        if changed or gone:
            try:
                publisher.update(m.topic, changed, sorted(gone))
            except ValueError:  # some entity uipd cannot publish (uipd logged and counted the refusal)
                changed, bad = publishable(changed)
                refused += [(str(e.get("id")), seen.get(e.get("id"), ""), why) for e, why in bad]
                if changed or gone:
                    publisher.update(m.topic, changed, sorted(gone))
        if complete:
            state.refused = {i: v for i, v in state.refused.items() if i in seen}
        for ident, version, _ in refused:
            state.versions.pop(ident, None)  # never published: compared afresh once it changes
            state.refused[ident] = version
        if refused:
            self.refused += len(refused)
            log.warning(
                "NGSI-LD %s: %d entit%s left out, the others published: %s", m.type, len(refused), "y" if len(refused) == 1 else "ies",
                "; ".join(why for _, _, why in refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else ""),
            )
        for ident in gone:
            state.alerts.forget(ident)
        for entity in changed:
            for rule in state.alerts.check(entity):
                publisher.alert(m.topic, alert_data(rule, entity))
        return len(changed), [why for _, _, why in refused]

    # -- push mode ------------------------------------------------------------------------------

    async def _keep_subscription(self, broker: Broker) -> None:
        """Create the subscription, or re-create it when the broker lost it (restart, expiry)."""
        if self.subscription is not None and await broker.subscription_exists(self.subscription):
            return
        if self.subscription is not None:
            log.warning("NGSI-LD subscription %s is gone from the broker; registering it again", self.subscription)
        self.subscription = await broker.create_subscription()
        log.info("NGSI-LD subscription %s registered; notifications to %s", self.subscription, self.options.notify_url)

    async def _drop_subscription(self, broker: Broker) -> None:
        # on shutdown or restart: best effort, bounded, and shielded so cancellation still lets it go out
        location, self.subscription = self.subscription, None
        assert location is not None
        with trio.move_on_after(min(self.options.timeout, 2.0)) as scope:
            scope.shield = True
            try:
                await broker.delete_subscription(location)
            except BrokerError as exc:
                log.warning("could not delete NGSI-LD subscription %s: %s", location, exc)

    def http_routes(self) -> Mapping[str, HttpHandler]:
        return {"notify": self.notify}

    async def notify(self, request: HttpRequest) -> HttpResponse:
        """``POST /sources/NAME/notify``: an NGSI-LD notification ``{"type":"Notification","data":[...]}``."""
        if request.method != "POST":
            return HttpResponse(405, {"ok": False, "error": "POST an NGSI-LD notification"})
        publisher = self._publisher
        if publisher is None:
            return HttpResponse(503, {"ok": False, "error": "the source is not running"})
        try:
            body = parse_json(request.body)
        except ValueError:  # NaN, Infinity and nesting past the decoder included
            log.warning("NGSI-LD notification refused: the body is not JSON")
            return HttpResponse(400, {"ok": False, "error": "the body is not JSON"})
        if not isinstance(body, dict) or body.get("type") != "Notification" or not isinstance(body.get("data"), list):
            log.warning("NGSI-LD notification refused: not {\"type\":\"Notification\",\"data\":[...]}")
            return HttpResponse(400, {"ok": False, "error": 'expected {"type":"Notification","data":[...]}'})
        by_type: dict[str, list[Any]] = {}
        deleted: dict[str, list[str]] = {}
        for entity in body["data"]:
            kind = entity.get("type") if isinstance(entity, dict) else None
            state = self._states.get(kind) if isinstance(kind, str) else None
            ident = entity_id(entity)
            if state is None or ident is None:
                self.skipped += 1
                continue
            if state.notified is not None:
                state.notified.add(ident)
            if entity.get("deletedAt"):  # NGSI-LD 1.8 entityDeleted notifications
                deleted.setdefault(state.mapping.type, []).append(ident)
            else:
                by_type.setdefault(state.mapping.type, []).append(entity)
        sent = 0
        refused: list[str] = []
        for t in by_type.keys() | deleted.keys():
            try:
                n, left_out = self._apply(publisher, self._states[t], by_type.get(t, []), complete=False, removed=deleted.get(t, []))
            except ValueError as exc:  # uipd refused the type's entities (logged by uipd): nothing of them changed
                refused.append(f"{t}: {exc}")
                continue
            sent += n
            refused += (f"{t}: {why}" for why in left_out)
        self.notifications += 1
        if refused:
            return HttpResponse(400, {"ok": False, "error": "; ".join(refused), "changed": sent})
        return HttpResponse(200, {"ok": True, "entities": len(body["data"]), "changed": sent})
