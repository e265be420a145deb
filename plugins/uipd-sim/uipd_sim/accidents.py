"""The ``accidents`` topic: accidents detected near cameras, which later clear.

An accident appears next to a random camera, more often in rush hours; it stays for a
severity-dependent number of ticks, is then marked ``resolved: true`` for one minute's worth of
ticks so clients can show it closing, and is then removed.  Each new severe or fatal one is
also sent as an ALERT.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from attrs import define

from uipd_sim.cameras import Camera
from uipd_sim.common import KM_PER_DEG_LAT, KM_PER_DEG_LNG, Entity, Step, in_bbox, iso, traffic_demand

SEVERITIES = ("minor", "moderate", "severe", "fatal")
WEIGHTS = (0.55, 0.30, 0.12, 0.03)
ALERT_SEVERITIES = frozenset({"severe", "fatal"})

# how long an accident blocks the road, in minutes (converted to ticks of the topic's interval)
_DURATION_MIN = {"minor": (5, 15), "moderate": (10, 30), "severe": (20, 60), "fatal": (30, 90)}
_CASUALTIES = {"minor": (0, 1), "moderate": (0, 2), "severe": (1, 4), "fatal": (1, 5)}
_DESCRIPTIONS = (
    "Collision between two motorbikes on {street}",
    "Motorbike and car collision on {street}",
    "Truck and motorbike collision on {street}",
    "Rear-end collision on {street}",
    "Bus involved in a collision on {street}",
    "Motorbike skid on {street}",
)

MIN_ACTIVE = 5
MAX_ACTIVE = 40
BASE_RATE_PER_MINUTE = 0.54
"""New accidents per minute at zero demand; rush-hour demand about doubles it.  With the
average durations above (about 18 minutes) that keeps 10-25 accidents open."""


@define
class _Open:
    entity: Entity
    resolve_at: int
    """Tick at which the accident is marked resolved."""
    remove_at: int
    """Tick at which it is removed from the topic."""


class AccidentSim:
    topic = "accidents"

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random, interval: float) -> None:
        self.cameras = cameras
        self.rng = rng
        self.ticks_per_minute = 60.0 / interval
        self.tick = 0
        self.serial = 0
        self.open: dict[str, _Open] = {}

    def _new(self, now: datetime, age_ticks: int = 0) -> tuple[Entity, _Open]:
        rng = self.rng
        cam = rng.choice(self.cameras)
        severity = rng.choices(SEVERITIES, WEIGHTS)[0]
        lo, hi = _CASUALTIES[severity]
        # within ~200 m of the camera: it is the camera's feed that detected it
        while True:
            lat = round(cam.lat + rng.uniform(-0.2, 0.2) / KM_PER_DEG_LAT, 6)
            lng = round(cam.lng + rng.uniform(-0.2, 0.2) / KM_PER_DEG_LNG, 6)
            if in_bbox(lat, lng):
                break
        seen = now - timedelta(minutes=age_ticks / self.ticks_per_minute)
        entity = {
            "id": f"urn:ngsi-ld:Accident:{cam.index}-{seen.strftime('%Y%m%dT%H%M%S%f')}-{self.serial}",
            "type": "traffic_accident",
            "severity": severity,
            "location": {"lat": lat, "lng": lng},
            "timestamp": iso(seen),
            "description": rng.choice(_DESCRIPTIONS).format(street=rng.choice(cam.name.split(" - "))),
            "resolved": False,
            "casualties": rng.randint(lo, hi),
            "confidence": round(rng.uniform(0.6, 0.99), 3),
            "affectedCamera": cam.id,
            "source": "DETR-CV-Analysis",
        }
        self.serial += 1
        d_lo, d_hi = _DURATION_MIN[severity]
        lasts = max(1, round(rng.uniform(d_lo, d_hi) * self.ticks_per_minute))
        resolve_at = self.tick - age_ticks + lasts
        state = _Open(entity, max(self.tick + 1, resolve_at), max(self.tick + 2, resolve_at + round(self.ticks_per_minute)))
        self.open[entity["id"]] = state
        return entity, state

    def _alert(self, e: Entity) -> Any:
        return {**e, "kind": "accident", "message": f"{e['severity'].capitalize()} accident: {e['description']}"}

    def initial(self, now: datetime) -> list[Entity]:
        self.open = {}
        # back-dated accidents of various ages, so they do not all clear at the same moment
        for _ in range(self.rng.randint(8, 16)):
            self._new(now, age_ticks=self.rng.randint(0, round(20 * self.ticks_per_minute)))
        return [o.entity for o in self.open.values()]

    def step(self, now: datetime) -> Step:
        self.tick += 1
        changed: list[Entity] = []
        removed: list[str] = []
        alerts: list[Any] = []
        for key, o in list(self.open.items()):
            if self.tick >= o.remove_at:
                del self.open[key]
                removed.append(key)
            elif self.tick >= o.resolve_at and not o.entity["resolved"]:
                o.entity = {**o.entity, "resolved": True}
                changed.append(o.entity)
        active = sum(not o.entity["resolved"] for o in self.open.values())
        rate = BASE_RATE_PER_MINUTE * (1 + 1.2 * traffic_demand(now)) / self.ticks_per_minute
        if active < MIN_ACTIVE:
            rate = max(rate, 0.5)  # the city is never this calm for long
        if len(self.open) < MAX_ACTIVE and self.rng.random() < min(1.0, rate):
            entity, _ = self._new(now)
            changed.append(entity)
            if entity["severity"] in ALERT_SEVERITIES:
                alerts.append(self._alert(entity))
        return Step(changed, removed, alerts)
