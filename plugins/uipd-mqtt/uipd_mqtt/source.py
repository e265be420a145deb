"""The ``mqtt`` Source: keeps a connection (reconnecting with backoff) and publishes each message's entity."""

from __future__ import annotations

import logging
from collections import Counter

import trio
from attrs import define, field

from uipd.plugin import Publisher
from uipd.plugin_tools import Backoff, HealthLog, RepeatLog
from uipd_mqtt.bridge import SessionEvents, run_session
from uipd_mqtt.mapping import BadPayload, route_for, to_change
from uipd_mqtt.options import MqttOptions

log = logging.getLogger(__name__)


@define
class MqttSource(SessionEvents):
    options: MqttOptions
    topics: tuple[str, ...] = field(init=False)
    counts: Counter[str] = field(factory=Counter, init=False)
    """``messages``, ``published``, ``removed``, ``bad_payload``, ``unrouted``, ``connections``, ``publish_errors``."""
    connected: bool = field(default=False, init=False)
    """Subscribed on a live connection right now."""
    _publisher: Publisher | None = field(default=None, init=False)
    _bad_log: RepeatLog = field(init=False)
    """The first bad message of a burst in full, then a summary per ``bad_payload_log_interval``."""
    _refused: str | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.topics = tuple(dict.fromkeys(r.topic for r in self.options.routes))
        self._bad_log = RepeatLog(self.where, log, self.options.bad_payload_log_interval, events="bad messages dropped", clock=trio.current_time)

    @property
    def where(self) -> str:
        return f"MQTT broker {self.options.host}:{self.options.port}"

    async def run(self, publisher: Publisher) -> None:
        o = self.options
        self._publisher = publisher
        backoff = Backoff(o.reconnect_min_delay, o.reconnect_max_delay)
        # logs each new reason we are not connected once (never the recovery: subscribed() logs that)
        health = HealthLog(self.where, log, backoff=backoff, action="reconnecting with backoff")
        try:
            while True:
                self._refused = None
                started = trio.current_time()
                failure = await run_session(o, self)
                was_connected, self.connected = self.connected, False
                failure = failure or self._refused or "connection lost"
                if was_connected or trio.current_time() - started > o.keepalive:
                    backoff.reset()  # it worked for a while: start the backoff over
                self._bad_log.flush()
                await health.retry_later(failure)
        finally:
            self._publisher = None
            self.connected = False

    # -- SessionEvents (called on the trio thread by the bridge) ---------------------------------

    def refused(self, reason: str) -> None:
        self._refused = f"connection refused by the broker: {reason}"

    def subscribed(self, failed_filters: list[str]) -> None:
        self.counts["connections"] += 1
        if failed_filters:
            log.error("%s: subscription refused for %s", self.where, ", ".join(failed_filters))
        log.info("%s: connected and subscribed (%d filter(s))", self.where, len({r.filter for r in self.options.routes}))
        self.connected = True
        if self._publisher is not None:
            # MQTT has no initial listing: live and subscribed (retained values arriving) is ready
            self._publisher.ready()

    def message(self, mqtt_topic: str, payload: bytes) -> None:
        self.counts["messages"] += 1
        publisher = self._publisher
        route = route_for(self.options.routes, mqtt_topic)
        if route is None or publisher is None:
            self.counts["unrouted"] += 1
            return
        try:
            change = to_change(route, mqtt_topic, payload, self.options.max_payload_bytes)
        except BadPayload as exc:
            self._bad_payload(mqtt_topic, str(exc))
            return
        try:
            if change.entity is not None:
                publisher.update(change.topic, [change.entity])
                self.counts["published"] += 1
            elif change.removed is not None and change.removed in publisher.current(change.topic):
                publisher.update(change.topic, removed=[change.removed])
                self.counts["removed"] += 1
        except ValueError as exc:  # uipd refused the entity (e.g. not encodable): the message is bad
            self.counts["publish_errors"] += 1
            self._bad_payload(mqtt_topic, f"refused by uipd: {exc}")
        except Exception as exc:  # any other fault is this message's alone: raised into paho's thread it would end the session
            self.counts["publish_errors"] += 1
            self._bad_payload(mqtt_topic, f"publishing it failed ({type(exc).__name__}: {exc})")

    def _bad_payload(self, mqtt_topic: str, why: str) -> None:
        self.counts["bad_payload"] += 1
        self._bad_log.report(f"dropped a message on {mqtt_topic!r}: {why}")
