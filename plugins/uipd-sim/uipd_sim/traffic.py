"""Traffic on the roads: the ``patterns`` topic (flow per road segment) and the
``congestion`` topic (a congested flag per monitored camera).

Both follow :func:`~uipd_sim.common.traffic_demand`, so the city slows down in the 7-9 and
17-19 rush hours (local time) and flows freely at night.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from attrs import frozen

from uipd_sim.cameras import Camera
from uipd_sim.common import HCMC_TZ, Entity, Step, distance_km, iso, iso_seconds, traffic_demand

PATTERN_REPORT_PROBABILITY = 0.4
"""Each tick about 40% of the segments get a new measurement; the rest are unchanged."""


def congestion_level(ratio: float) -> str:
    """Level from the speed as a fraction of the segment's free-flow speed."""
    if ratio >= 0.8:
        return "free_flow"
    if ratio >= 0.6:
        return "light"
    if ratio >= 0.42:
        return "moderate"
    if ratio >= 0.25:
        return "heavy"
    return "severe"


@frozen
class Segment:
    """A monitored stretch of road between two cameras."""

    index: int
    start: Camera
    end: Camera
    free_speed: float
    """km/h with no traffic."""
    capacity: int
    """Vehicles per minute at full demand."""
    sensitivity: float
    """How strongly demand slows this road (bottlenecks > 1)."""


def build_segments(cameras: tuple[Camera, ...], rng: random.Random, n: int) -> tuple[Segment, ...]:
    """``n`` segments, each from a camera to one of its nearest neighbours (a plausible road)."""
    starts = rng.sample(cameras, min(n, len(cameras)))
    segments = []
    for i, a in enumerate(starts):
        others = sorted((c for c in cameras if c is not a), key=lambda c: distance_km((a.lat, a.lng), (c.lat, c.lng)))
        b = rng.choice(others[:5]) if others else a
        arterial = a.arterial and b.arterial
        segments.append(
            Segment(
                index=i,
                start=a,
                end=b,
                free_speed=rng.uniform(55, 75) if arterial else rng.uniform(30, 55),
                capacity=rng.randint(60, 160) if arterial else rng.randint(15, 80),
                sensitivity=rng.uniform(0.7, 1.3),
            )
        )
    return tuple(segments)


class PatternSim:
    topic = "patterns"

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random) -> None:
        self.rng = rng
        self.segments = build_segments(cameras, rng, max(1, len(cameras) // 4))
        self.entities: dict[str, Entity] = {}

    def _speed(self, seg: Segment, demand: float) -> float:
        return seg.free_speed * (1 - 0.72 * min(1.0, demand * seg.sensitivity))

    def _measure(self, seg: Segment, now: datetime) -> Entity:
        rng = self.rng
        demand = traffic_demand(now)
        speed = round(max(3.0, self._speed(seg, demand) * rng.uniform(0.9, 1.1)), 1)
        count = max(0, round(seg.capacity * (0.08 + 0.92 * demand) * rng.uniform(0.85, 1.15)))
        key = f"urn:ngsi-ld:TrafficPattern:flow-{seg.index}"
        old = self.entities.get(key)
        # a moving average over recent measurements, as a detector would report
        avg = count if old is None else round(0.7 * old["avgVehicleCount"] + 0.3 * count)
        next_hour = round(max(3.0, self._speed(seg, traffic_demand(now + timedelta(hours=1)))), 1)
        return {
            "id": key,
            "patternType": "flow",
            "roadSegment": seg.start.id,
            "location": {
                "startPoint": {"latitude": seg.start.lat, "longitude": seg.start.lng},
                "endPoint": {"latitude": seg.end.lat, "longitude": seg.end.lng},
            },
            "averageSpeed": speed,
            "vehicleCount": count,
            "congestionLevel": congestion_level(speed / seg.free_speed),
            "timeOfDay": now.astimezone(HCMC_TZ).strftime("%H:%M"),
            "dayOfWeek": None,
            "timeRange": None,
            "daysOfWeek": [],
            "affectedCameras": [seg.start.id, seg.end.id],
            "avgVehicleCount": avg,
            "historicalData": [],
            "predictions": {"nextHour": next_hour, "confidence": round(rng.uniform(0.5, 0.9), 2)},
            "timestamp": iso(now),
        }

    def initial(self, now: datetime) -> list[Entity]:
        self.entities = {}
        for seg in self.segments:
            e = self._measure(seg, now)
            self.entities[e["id"]] = e
        return list(self.entities.values())

    def step(self, now: datetime) -> Step:
        changed = []
        for seg in self.segments:
            if self.rng.random() < PATTERN_REPORT_PROBABILITY:
                e = self._measure(seg, now)
                self.entities[e["id"]] = e
                changed.append(e)
        return Step(changed)


class CongestionSim:
    """About a third of the cameras run congestion detection; each flips between congested
    and clear as a two-state Markov chain whose odds follow the time of day."""

    topic = "congestion"

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random) -> None:
        self.rng = rng
        self.cameras = tuple(sorted(rng.sample(cameras, max(1, len(cameras) // 3)), key=lambda c: c.index))
        self.entities: dict[str, Entity] = {}

    @staticmethod
    def _odds(now: datetime) -> tuple[float, float]:
        """(chance to become congested, chance to clear) per tick."""
        d = traffic_demand(now)
        return 0.004 + 0.05 * d, 0.10 - 0.07 * d

    def _entity(self, cam: Camera, congested: bool, first_breach: str | None, now: datetime) -> Entity:
        return {
            "id": f"urn:ngsi-ld:CongestionObservation:{cam.index}",
            "cameraId": cam.id,
            "location": cam.location,
            "congested": congested,
            "firstBreach": first_breach,
            "lastUpdate": iso(now),
            # whether the write-back of the flag to the context broker succeeded
            "patchSuccess": self.rng.random() < 0.9,
            "timestamp": iso_seconds(now),
        }

    def initial(self, now: datetime) -> list[Entity]:
        p_on, p_off = self._odds(now)
        self.entities = {}
        for cam in self.cameras:
            congested = self.rng.random() < p_on / (p_on + p_off)
            breach = iso(now - timedelta(minutes=self.rng.uniform(1, 40))) if congested else None
            e = self._entity(cam, congested, breach, now)
            self.entities[e["id"]] = e
        return list(self.entities.values())

    def step(self, now: datetime) -> Step:
        p_on, p_off = self._odds(now)
        changed = []
        for cam in self.cameras:
            key = f"urn:ngsi-ld:CongestionObservation:{cam.index}"
            old = self.entities[key]
            if self.rng.random() < (p_off if old["congested"] else p_on):
                congested = not old["congested"]
                # firstBreach is when the current (or last) congested spell began
                breach = iso(now) if congested else old["firstBreach"]
                e = self._entity(cam, congested, breach, now)
                self.entities[key] = e
                changed.append(e)
        return Step(changed)
