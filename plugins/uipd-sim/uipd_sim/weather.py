"""The ``weather`` topic: one observation per camera area, tropical and spatially smooth.

Temperature follows a daily cycle on the wall clock (coolest near dawn, hottest mid
afternoon) plus a smooth field; rain comes from moving rain cells that are likelier in the
afternoon, as convective storms are in Saigon.  Units follow the fields: °C, %, mm (last
hour), m/s, hPa, %.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from urllib.parse import quote

from uipd_sim.cameras import Camera
from uipd_sim.common import BBOX, Blob, Entity, SmoothField, Step, iso, local_hour

REPORT_PROBABILITY = 0.25
"""Stations report asynchronously: each tick only about a quarter of the areas re-observe,
so an update carries a subset and the rest stay identical."""

_COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")


def compass(degrees: float) -> str:
    return _COMPASS[int(((degrees % 360) + 22.5) // 45) % 8]


def weather_type(precipitation: float, cloudiness: int) -> str:
    """OpenWeather's description strings, chosen from rain rate and cloud cover."""
    if precipitation >= 8:
        return "thunderstorm with rain"
    if precipitation >= 4:
        return "heavy intensity rain"
    if precipitation >= 1:
        return "moderate rain"
    if precipitation > 0:
        return "light rain"
    if cloudiness <= 10:
        return "clear sky"
    if cloudiness <= 25:
        return "few clouds"
    if cloudiness <= 50:
        return "scattered clouds"
    if cloudiness <= 84:
        return "broken clouds"
    return "overcast clouds"


def area_id(kind: str, cam: Camera) -> str:
    """Stable per-area id (no timestamp in it, so a new observation replaces the old one)."""
    return f"urn:ngsi-ld:{kind}:{quote(cam.num)}"


class WeatherSim:
    topic = "weather"
    MAX_CELLS = 6

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random, interval: float) -> None:
        self.cameras = cameras
        self.rng = rng
        self.tick_hours = interval / 3600
        self.hours = 0.0
        """Model time, advanced one nominal interval per tick; drives the fields' drift."""
        self.temp_field = SmoothField.random(rng)
        self.cloud_field = SmoothField.random(rng)
        self.wind_field = SmoothField.random(rng)
        self.pressure_field = SmoothField.random(rng, 3)
        self.direction_field = SmoothField.random(rng, 3)
        self.wind_from = rng.choice((225.0, 250.0, 90.0, 45.0))  # SW monsoon or NE/E trade winds
        self.cells: list[Blob] = []
        self.entities: dict[str, Entity] = {}

    def _new_cell(self) -> Blob:
        rng = self.rng
        speed = rng.uniform(8, 30)
        heading = math.radians(rng.uniform(180, 300))  # storms mostly drift west/south-west
        return Blob(
            lat=rng.uniform(BBOX[0], BBOX[1]),
            lng=rng.uniform(BBOX[2], BBOX[3]),
            radius_km=rng.uniform(2.5, 9.0),
            peak=rng.uniform(1.0, 18.0),
            vx_kmh=speed * math.sin(heading),
            vy_kmh=speed * math.cos(heading),
            age=0,
            life=rng.randint(40, 200),
        )

    def _advance(self, now: datetime) -> None:
        self.hours += self.tick_hours
        self.cells = [c.advanced(self.tick_hours) for c in self.cells if c.alive]
        h = local_hour(now)
        afternoon = 13 <= h <= 20
        if len(self.cells) < self.MAX_CELLS and self.rng.random() < (0.03 if afternoon else 0.005):
            self.cells.append(self._new_cell())

    def _observe(self, cam: Camera, now: datetime) -> Entity:
        rng, lat, lng, t = self.rng, cam.lat, cam.lng, self.hours
        rain = sum(c.at(lat, lng) for c in self.cells)
        precipitation = round(rain, 2) if rain >= 0.05 else 0.0
        h = local_hour(now)
        daily = 29.5 + 4.0 * math.sin(2 * math.pi * (h - 9) / 24)  # 25.5 °C at 03:00, 33.5 at 15:00
        temperature = daily + 1.2 * self.temp_field.value(lat, lng, t) - 0.6 * min(rain, 6) + rng.gauss(0, 0.15)
        temperature = round(min(36.0, max(24.0, temperature)), 2)
        humidity = 72 + 3.0 * (29.5 - temperature) + 18 * min(1.0, rain / 2) + rng.gauss(0, 1)
        cloud = 45 + 40 * self.cloud_field.value(lat, lng, t) + 60 * min(1.0, rain)
        wind = 2.5 + 1.5 * self.wind_field.value(lat, lng, t) + 0.4 * min(rain, 5) + rng.gauss(0, 0.2)
        direction = self.wind_from + 25 * self.direction_field.value(lat, lng, t) + rng.gauss(0, 8)
        pressure = 1010 + 2.5 * self.pressure_field.value(lat, lng, t) + 1.0 * math.cos(4 * math.pi * (h - 10) / 24)
        return {
            "id": area_id("WeatherObserved", cam),
            "cameraId": cam.id,
            "location": cam.location,
            "temperature": temperature,
            "humidity": int(min(100, max(45, round(humidity)))),
            "precipitation": precipitation,
            "windSpeed": round(max(0.0, wind), 2),
            "windDirection": compass(direction),
            "weatherType": weather_type(precipitation, int(min(100, max(0, round(cloud))))),
            "pressure": int(round(pressure)),
            "cloudiness": int(min(100, max(0, round(cloud)))),
            "dateObserved": iso(now),
        }

    def initial(self, now: datetime) -> list[Entity]:
        # start with the rain that would typically be around at this hour
        for _ in range(self.rng.randint(0, 3)):
            cell = self._new_cell()
            self.cells.append(Blob(cell.lat, cell.lng, cell.radius_km, cell.peak, cell.vx_kmh, cell.vy_kmh, cell.life // 3, cell.life))
        self.entities = {}
        for cam in self.cameras:
            e = self._observe(cam, now)
            self.entities[e["id"]] = e
        return list(self.entities.values())

    def step(self, now: datetime) -> Step:
        self._advance(now)
        changed = []
        for cam in self.cameras:
            if self.rng.random() >= REPORT_PROBABILITY:
                continue
            e = self._observe(cam, now)
            self.entities[e["id"]] = e
            changed.append(e)
        return Step(changed)
