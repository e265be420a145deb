"""The ``airQuality`` topic: pollutants per camera area, the US EPA AQI, and ALERTs when an
area's AQI crosses above the threshold.

Particulates follow traffic (rush-hour peaks, a night-time inversion bump) over a smooth
spatial field; now and then a pollution episode (a slow drifting plume) pushes the areas it
covers above AQI 150.  Concentrations are µg/m³ like OpenWeather's air-pollution API.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from typing import Any

from uipd_sim.cameras import Camera
from uipd_sim.common import BBOX, Blob, Entity, SmoothField, Step, daily_bump, iso, local_hour, traffic_demand
from uipd_sim.weather import area_id

REPORT_PROBABILITY = 0.25
"""As for weather: about a quarter of the monitors report each tick."""

HYSTERESIS = 10
"""An area counts as back below the threshold only at ``threshold - HYSTERESIS`` or less, so
readings jittering around the threshold do not raise an ALERT on every other report."""

# US EPA breakpoints (the 2012 PM2.5 table, which the recorded city data follows):
# (concentration low, high, AQI low, high).
_PM25 = ((0.0, 12.0, 0, 50), (12.1, 35.4, 51, 100), (35.5, 55.4, 101, 150), (55.5, 150.4, 151, 200),
         (150.5, 250.4, 201, 300), (250.5, 350.4, 301, 400), (350.5, 500.4, 401, 500))  # fmt: skip
_PM10 = ((0, 54, 0, 50), (55, 154, 51, 100), (155, 254, 101, 150), (255, 354, 151, 200),
         (355, 424, 201, 300), (425, 504, 301, 400), (505, 604, 401, 500))  # fmt: skip

LEVELS = (
    (50, "good", "#00e400"),
    (100, "moderate", "#ffff00"),
    (150, "unhealthy_for_sensitive_groups", "#ff7e00"),
    (200, "unhealthy", "#ff0000"),
    (300, "very_unhealthy", "#8f3f97"),
    (10**9, "hazardous", "#7e0023"),
)


def _sub_index(c: float, table: tuple[tuple[float, float, int, int], ...]) -> int:
    for c_lo, c_hi, i_lo, i_hi in table:
        if c <= c_hi:
            return round((i_hi - i_lo) / (c_hi - c_lo) * (max(c, c_lo) - c_lo) + i_lo)
    return 500


def aqi(pm25: float, pm10: float) -> int:
    """The AQI is the worse of the two particulate sub-indices (EPA truncation rules applied)."""
    return max(_sub_index(math.floor(pm25 * 10) / 10, _PM25), _sub_index(math.floor(pm10), _PM10))


def level(value: int) -> tuple[str, str]:
    """(level name, EPA colour) for an AQI value."""
    for top, name, colour in LEVELS:
        if value <= top:
            return name, colour
    raise AssertionError("unreachable")


class AirQualitySim:
    topic = "airQuality"
    MAX_EPISODES = 2
    P_EPISODE = 0.004
    """Per tick chance of a new episode: one every two hours or so at 30 s ticks."""

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random, interval: float, threshold: int) -> None:
        self.cameras = cameras
        self.rng = rng
        self.threshold = threshold
        self.tick_hours = interval / 3600
        self.hours = 0.0
        self.pm_field = SmoothField.random(rng)
        self.gas_field = SmoothField.random(rng)
        self.episodes: list[Blob] = []
        self.entities: dict[str, Entity] = {}
        self.above: set[str] = set()
        """Areas whose last reported AQI is above the threshold: an ALERT fires only on entry."""

    def start_episode(self, lat: float, lng: float, peak: float = 120.0, radius_km: float = 5.0, life: int = 60) -> None:
        """Start a pollution plume (extra PM2.5 µg/m³ at its peak) at a place; public for tests and demos."""
        self.episodes.append(Blob(lat, lng, radius_km, peak, self.rng.uniform(-3, 3), self.rng.uniform(-3, 3), 0, life))

    def _advance(self) -> None:
        self.hours += self.tick_hours
        self.episodes = [e.advanced(self.tick_hours) for e in self.episodes if e.alive]
        if len(self.episodes) < self.MAX_EPISODES and self.rng.random() < self.P_EPISODE:
            rng = self.rng
            self.start_episode(
                rng.uniform(BBOX[0] + 0.05, BBOX[1] - 0.05),
                rng.uniform(BBOX[2] + 0.05, BBOX[3] - 0.05),
                peak=rng.uniform(40, 140),
                radius_km=rng.uniform(1.5, 4.0),
                life=rng.randint(40, 240),
            )

    def _observe(self, cam: Camera, now: datetime) -> Entity:
        rng, lat, lng, t = self.rng, cam.lat, cam.lng, self.hours
        h = local_hour(now)
        demand = traffic_demand(now)
        inversion = daily_bump(h, 22.0, 3.0)  # the evening boundary layer traps exhaust
        base = 12 + 11 * demand + 6 * inversion
        pm25 = base * (1 + 0.35 * self.pm_field.value(lat, lng, t)) + sum(e.at(lat, lng) for e in self.episodes)
        pm25 = max(2.0, pm25 * rng.uniform(0.95, 1.05))
        pm10 = pm25 * rng.uniform(1.6, 1.9)
        gas = 1 + 0.3 * self.gas_field.value(lat, lng, t)
        sun = max(0.0, math.sin(math.pi * (h - 6) / 12))  # ozone is photochemical: afternoon peak
        value = aqi(pm25, pm10)
        name, colour = level(value)
        return {
            "id": area_id("AirQualityObserved", cam),
            "cameraId": cam.id,
            "location": cam.location,
            "aqi": value,
            "pm25": round(pm25, 2),
            "pm10": round(pm10, 2),
            "no2": round(max(0.5, (4 + 30 * demand) * gas * rng.uniform(0.9, 1.1)), 2),
            "o3": round(max(1.0, (20 + 70 * sun) * (2 - gas) * rng.uniform(0.9, 1.1)), 2),
            "co": round(max(100.0, (250 + 600 * demand) * gas * rng.uniform(0.9, 1.1)), 2),
            "so2": round(max(0.2, (1.5 + 4 * demand) * gas * rng.uniform(0.85, 1.15)), 2),
            "level": name,
            "colorCode": colour,
            "dateObserved": iso(now),
        }

    def _alert(self, e: Entity, cam: Camera) -> Any:
        return {
            **e,
            "kind": "air_quality",
            "threshold": self.threshold,
            "message": f"AQI {e['aqi']} ({e['level'].replace('_', ' ')}) near {cam.name}",
        }

    def initial(self, now: datetime) -> list[Entity]:
        self.entities = {}
        self.above = set()
        for cam in self.cameras:
            e = self._observe(cam, now)
            self.entities[e["id"]] = e
            if e["aqi"] > self.threshold:
                self.above.add(e["id"])  # already above at start: not a crossing, no ALERT
        return list(self.entities.values())

    def step(self, now: datetime) -> Step:
        self._advance()
        changed, alerts = [], []
        for cam in self.cameras:
            if self.rng.random() >= REPORT_PROBABILITY:
                continue
            e = self._observe(cam, now)
            self.entities[e["id"]] = e
            changed.append(e)
            if e["aqi"] > self.threshold:
                if e["id"] not in self.above:
                    self.above.add(e["id"])
                    alerts.append(self._alert(e, cam))
            elif e["aqi"] <= self.threshold - HYSTERESIS:
                self.above.discard(e["id"])
        return Step(changed, [], alerts)
