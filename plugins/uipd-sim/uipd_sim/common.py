"""Small shared pieces of the model: the result of a step, time formatting, geometry,
the daily traffic-demand curve and smooth random fields over the city."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from attrs import field, frozen

Entity = dict[str, Any]

# Viet Nam has had no daylight-saving time since 1975, so a fixed offset is exact and avoids
# depending on the tz database (tzdata is not installed everywhere).
HCMC_TZ = timezone(timedelta(hours=7), "ICT")

CENTRE = (10.78, 106.70)
"""The centre of Ho Chi Minh City (around Bến Thành), where cameras are densest."""

BBOX = (10.64, 11.00, 106.45, 106.85)
"""lat_min, lat_max, lng_min, lng_max: every generated location lies inside."""

KM_PER_DEG_LAT = 111.32
KM_PER_DEG_LNG = 111.32 * math.cos(math.radians(CENTRE[0]))


@frozen
class Step:
    """What one tick of a topic changed: upserted entities, removed ids, and ALERT payloads."""

    changed: list[Entity] = field(factory=list)
    removed: list[str] = field(factory=list)
    alerts: list[Any] = field(factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.alerts)


def iso(t: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``, as the recorded city data has it."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(t: datetime) -> str:
    """ISO 8601 UTC to the second (the congestion ``timestamp`` field)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_hour(t: datetime) -> float:
    """Hour of the day in Ho Chi Minh City as a float (7.5 is 07:30)."""
    lt = t.astimezone(HCMC_TZ)
    return lt.hour + lt.minute / 60 + lt.second / 3600


def is_weekend(t: datetime) -> bool:
    return t.astimezone(HCMC_TZ).weekday() >= 5


def to_km(lat: float, lng: float) -> tuple[float, float]:
    """Local flat coordinates in km east/north of the centre; good enough at city scale."""
    return (lng - CENTRE[1]) * KM_PER_DEG_LNG, (lat - CENTRE[0]) * KM_PER_DEG_LAT


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    ax, ay = to_km(*a)
    bx, by = to_km(*b)
    return math.hypot(ax - bx, ay - by)


def in_bbox(lat: float, lng: float) -> bool:
    return BBOX[0] <= lat <= BBOX[1] and BBOX[2] <= lng <= BBOX[3]


def daily_bump(h: float, centre: float, width: float) -> float:
    """A Gaussian bump over the hour of day; circular, so 23:30 and 00:30 are an hour apart."""
    d = min(abs(h - centre) % 24, 24 - abs(h - centre) % 24)
    return math.exp(-((d / width) ** 2))


def traffic_demand(t: datetime) -> float:
    """Road demand 0..1 by local time: peaks in the morning (7-9) and evening (17-19) rush
    hours, a smaller midday bump, nearly empty at night; weekends are lighter."""
    h = local_hour(t)

    def bump(centre: float, width: float) -> float:
        return daily_bump(h, centre, width)

    d = 0.1 + 0.8 * bump(8.0, 1.1) + 0.85 * bump(18.0, 1.3) + 0.3 * bump(12.5, 2.5)
    if is_weekend(t):
        d *= 0.7
    return min(1.0, d)


@frozen
class SmoothField:
    """A random field over the city that varies smoothly in space and slowly in time.

    A sum of a few plane waves with wavelengths of 10-50 km: two cameras a few hundred metres
    apart get almost the same value, which is what makes weather and pollution look spatially
    coherent.  ``value`` is roughly in [-1, 1].
    """

    waves: tuple[tuple[float, float, float, float, float], ...]
    """(amplitude, kx, ky, omega per hour, phase) per wave."""

    @classmethod
    def random(cls, rng: random.Random, n: int = 5) -> SmoothField:
        waves = []
        for _ in range(n):
            wavelength = rng.uniform(10.0, 50.0)
            theta = rng.uniform(0, 2 * math.pi)
            k = 2 * math.pi / wavelength
            waves.append((rng.uniform(0.5, 1.0), k * math.cos(theta), k * math.sin(theta), rng.uniform(0.05, 0.4), rng.uniform(0, 2 * math.pi)))
        return cls(tuple(waves))

    def value(self, lat: float, lng: float, hours: float) -> float:
        x, y = to_km(lat, lng)
        total = sum(a * math.sin(kx * x + ky * y - w * hours + p) for a, kx, ky, w, p in self.waves)
        norm = sum(a for a, *_ in self.waves) or 1.0
        # the sum of n independent sines has a spread of about norm/sqrt(2n); rescale so values
        # use most of [-1, 1] instead of hugging 0
        return max(-1.0, min(1.0, total / norm * math.sqrt(len(self.waves))))


@frozen
class Blob:
    """A moving, growing-then-fading Gaussian bump (a rain cell, a pollution episode)."""

    lat: float
    lng: float
    radius_km: float
    peak: float
    vx_kmh: float
    vy_kmh: float
    age: int
    life: int
    """Ticks lived and total ticks; the strength rises then falls as a half sine over the life."""

    def strength(self) -> float:
        return self.peak * math.sin(math.pi * min(self.age, self.life) / self.life)

    def at(self, lat: float, lng: float) -> float:
        d = distance_km((self.lat, self.lng), (lat, lng))
        return self.strength() * math.exp(-((d / self.radius_km) ** 2))

    def advanced(self, hours: float) -> Blob:
        return Blob(
            self.lat + self.vy_kmh * hours / KM_PER_DEG_LAT,
            self.lng + self.vx_kmh * hours / KM_PER_DEG_LNG,
            self.radius_km,
            self.peak,
            self.vx_kmh,
            self.vy_kmh,
            self.age + 1,
            self.life,
        )

    @property
    def alive(self) -> bool:
        return self.age < self.life
