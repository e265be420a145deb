"""The uipd hook implementation: the ``sim`` source type, its options and the Source that
drives :class:`uipd_sim.city.City` with trio timers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import trio
import attrs
from attrs import field, frozen

from uipd.plugin import Publisher, SourceType, hookimpl
from uipd.plugin_tools import non_negative, positive
from uipd_sim.city import TOPICS, City


@frozen
class SimOptions:
    """The ``[sources.NAME]`` table of a ``plugin = "sim"`` source; every key is optional.  The
    validators are uipd's (finite: an infinite interval would never tick, an infinite speed would
    make every period 0)."""

    seed: int = 20251129
    """Seeds every random choice: the same seed gives the same cameras and the same values."""
    speed: float = field(default=1.0, validator=positive)
    """Time factor for demos and tests: 10 makes every interval 10 times shorter."""
    cameras: int = field(default=700, validator=attrs.validators.ge(1))
    accidents_interval: float = field(default=10.0, validator=positive)
    patterns_interval: float = field(default=60.0, validator=positive)
    cameras_interval: float = field(default=30.0, validator=positive)
    weather_interval: float = field(default=30.0, validator=positive)
    air_quality_interval: float = field(default=30.0, validator=positive)
    congestion_interval: float = field(default=30.0, validator=positive)
    aqi_alert_threshold: int = field(default=150, validator=non_negative)
    """An ALERT on ``airQuality`` when an area's AQI rises above this."""
    topic_prefix: str = ""
    """Prepended to every topic name, e.g. ``"sim."``, to run the simulator beside real sources."""

    def intervals(self) -> dict[str, float]:
        """Nominal seconds between ticks, by (unprefixed) topic."""
        return {
            "cameras": self.cameras_interval,
            "weather": self.weather_interval,
            "airQuality": self.air_quality_interval,
            "accidents": self.accidents_interval,
            "patterns": self.patterns_interval,
            "congestion": self.congestion_interval,
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SimSource:
    """Publishes the simulated city: full state of every topic, ``ready()``, then per-topic ticks."""

    def __init__(self, options: SimOptions, now: Callable[[], datetime] = _utcnow) -> None:
        self.options = options
        self.now = now
        self.topics = tuple(options.topic_prefix + t for t in TOPICS)

    async def run(self, publisher: Publisher) -> None:
        o = self.options
        # a fresh model on every (re)start; replace() drops what a previous run left behind
        city = City(o.seed, o.cameras, o.aqi_alert_threshold, o.intervals())
        now = self.now()
        for topic in TOPICS:
            publisher.replace(o.topic_prefix + topic, city.initial(topic, now))
        publisher.ready()
        async with trio.open_nursery() as nursery:
            for topic, interval in o.intervals().items():
                nursery.start_soon(self._tick, city, topic, interval / o.speed, publisher)

    async def _tick(self, city: City, topic: str, period: float, publisher: Publisher) -> None:
        name = self.options.topic_prefix + topic
        deadline = trio.current_time()
        while True:
            # absolute deadlines, so the time spent stepping does not make the ticks drift
            deadline += period
            await trio.sleep_until(deadline)
            step = city.step(topic, self.now())
            if step.changed or step.removed:
                publisher.update(name, step.changed, step.removed)
            for data in step.alerts:
                publisher.alert(name, data)


def create(options: SimOptions) -> SimSource:
    return SimSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [
        SourceType(
            "sim",
            SimOptions,
            create,
            "a simulated Ho Chi Minh City: cameras, weather, airQuality, accidents, patterns, congestion",
        )
    ]
