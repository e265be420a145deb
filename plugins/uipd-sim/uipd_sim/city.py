"""The whole simulated city: the camera layout and one simulator per topic.

Pure and deterministic: nothing here sleeps, reads the clock or does I/O.  The caller passes
the wall-clock time ``now`` (used only for timestamps and the time-of-day cycles); all values
come from RNGs seeded from ``seed``.  Each topic has its own RNG derived from the seed, so a
topic's sequence of values does not depend on how the ticks of different topics interleave.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from uipd_sim.accidents import AccidentSim
from uipd_sim.air import AirQualitySim
from uipd_sim.cameras import Camera, CameraSim, build_cameras
from uipd_sim.common import Entity, Step
from uipd_sim.traffic import CongestionSim, PatternSim
from uipd_sim.weather import WeatherSim

TOPICS = ("cameras", "weather", "airQuality", "accidents", "patterns", "congestion")

DEFAULT_INTERVALS: Mapping[str, float] = {
    "cameras": 30.0,
    "weather": 30.0,
    "airQuality": 30.0,
    "accidents": 10.0,
    "patterns": 60.0,
    "congestion": 30.0,
}
"""Nominal seconds between ticks per topic; the model scales its dynamics (storm motion,
accident durations) to them, independently of any demo speed-up."""


class TopicSim(Protocol):
    topic: str

    def initial(self, now: datetime) -> list[Entity]:
        """The topic's full state at start."""

    def step(self, now: datetime) -> Step:
        """Advance one tick; return only what changed."""


class City:
    """Build with a seed, call :meth:`initial` once per topic, then :meth:`step` per tick."""

    def __init__(
        self,
        seed: int = 20251129,
        cameras: int = 700,
        aqi_alert_threshold: int = 150,
        intervals: Mapping[str, float] = DEFAULT_INTERVALS,
    ) -> None:
        if cameras < 1:
            raise ValueError(f"cameras: must be at least 1, got {cameras}")
        self.seed = seed
        self.cameras: tuple[Camera, ...] = build_cameras(random.Random(seed), cameras)

        def rng(topic: str) -> random.Random:
            return random.Random(f"{seed}/{topic}")  # str seeds are hashed deterministically

        iv = {**DEFAULT_INTERVALS, **intervals}
        self.sims: dict[str, TopicSim] = {
            "cameras": CameraSim(self.cameras, rng("cameras")),
            "weather": WeatherSim(self.cameras, rng("weather"), iv["weather"]),
            "airQuality": AirQualitySim(self.cameras, rng("airQuality"), iv["airQuality"], aqi_alert_threshold),
            "accidents": AccidentSim(self.cameras, rng("accidents"), iv["accidents"]),
            "patterns": PatternSim(self.cameras, rng("patterns")),
            "congestion": CongestionSim(self.cameras, rng("congestion")),
        }

    def initial(self, topic: str, now: datetime) -> list[Entity]:
        return self.sims[topic].initial(now)

    def step(self, topic: str, now: datetime) -> Step:
        return self.sims[topic].step(now)
