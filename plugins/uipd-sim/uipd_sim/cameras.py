"""The camera network: where the cameras are (built once from the seed) and the ``cameras``
topic, whose only live change is cameras going offline and coming back."""

from __future__ import annotations

import random
from datetime import datetime
from urllib.parse import quote

from attrs import frozen

from uipd_sim.common import CENTRE, Entity, Step, in_bbox, iso
from uipd_sim.streets import ARTERIALS, STREETS

# Districts outside the centre where cameras cluster: (lat, lng, spread in degrees, weight).
# The centre itself takes the largest share, so density falls off away from District 1.
_CLUSTERS: tuple[tuple[float, float, float, float], ...] = (
    (CENTRE[0], CENTRE[1], 0.030, 0.40),  # Districts 1, 3, 5, 10, Phú Nhuận
    (10.850, 106.770, 0.030, 0.09),  # Thủ Đức
    (10.838, 106.665, 0.020, 0.08),  # Gò Vấp
    (10.800, 106.650, 0.020, 0.09),  # Tân Bình / Tân Phú
    (10.760, 106.605, 0.022, 0.07),  # Bình Tân
    (10.735, 106.720, 0.018, 0.07),  # District 7
    (10.865, 106.640, 0.022, 0.05),  # District 12
    (10.810, 106.710, 0.015, 0.06),  # Bình Thạnh
    (10.700, 106.600, 0.030, 0.03),  # Bình Chánh
    (10.890, 106.590, 0.030, 0.03),  # Hóc Môn
    (10.680, 106.740, 0.020, 0.02),  # Nhà Bè
    (10.970, 106.500, 0.020, 0.02),  # Củ Chi
)

CAMERA_URL = "https://traffic-cameras.example.org/render/ImageHandler.ashx?id={image}&zoom=4&t={ms}"
"""Fake-but-plausible snapshot URL; the real city portal serves JPEGs from a URL of this shape."""


@frozen
class Camera:
    """One traffic camera's fixed facts."""

    index: int
    num: str
    """The city's camera number, e.g. ``"TTH 406"``."""
    name: str
    lat: float
    lng: float
    kind: str
    """``PTZ`` or ``Static``."""
    image: str
    """The opaque image id in the snapshot URL."""
    arterial: bool
    """On a major through-road (faster free flow)."""

    @property
    def id(self) -> str:
        return camera_id(self.num)

    @property
    def location(self) -> dict[str, float]:
        return {"lat": self.lat, "lng": self.lng}


def camera_id(num: str) -> str:
    """The NGSI-LD id, with the number percent-encoded as in the recorded data."""
    return f"urn:ngsi-ld:Camera:{quote(num)}"


def build_cameras(rng: random.Random, n: int) -> tuple[Camera, ...]:
    """Place ``n`` cameras at plausible intersections, deterministically from ``rng``."""
    weights = [c[3] for c in _CLUSTERS]
    numbers = rng.sample(range(1, max(1000, 4 * n)), n)
    seen: set[tuple[float, float]] = set()
    cameras = []
    for i in range(n):
        while True:
            clat, clng, spread, _ = rng.choices(_CLUSTERS, weights)[0]
            lat = round(rng.gauss(clat, spread), 6)
            lng = round(rng.gauss(clng, spread), 6)
            # rejection sampling keeps the Gaussian clusters inside the city's bounding box
            if in_bbox(lat, lng) and (lat, lng) not in seen:
                break
        seen.add((lat, lng))
        a, b = rng.sample(STREETS, 2)
        cameras.append(
            Camera(
                index=i,
                num=f"TTH {numbers[i]}",
                name=f"{a} - {b}",
                lat=lat,
                lng=lng,
                kind="PTZ" if rng.random() < 0.35 else "Static",
                image=f"{rng.getrandbits(96):024x}",
                arterial=a in ARTERIALS or b in ARTERIALS,
            )
        )
    return tuple(cameras)


class CameraSim:
    """The ``cameras`` topic: a camera occasionally drops offline and usually recovers within
    a few minutes, so each tick changes only a handful of entities."""

    topic = "cameras"
    P_FAIL = 0.003
    """Per tick, chance an online camera goes offline (about 2 of 700 per 30 s)."""
    P_RECOVER = 0.15
    """Per tick, chance an offline camera is back (a few minutes of outage on average)."""

    def __init__(self, cameras: tuple[Camera, ...], rng: random.Random) -> None:
        self.cameras = cameras
        self.rng = rng
        self.entities: dict[str, Entity] = {}

    def _entity(self, cam: Camera, status: str, now: datetime) -> Entity:
        url = CAMERA_URL.format(image=cam.image, ms=int(now.timestamp() * 1000))
        return {
            "id": cam.id,
            "name": cam.name,
            "cameraName": cam.name,
            "type": "Camera",
            "cameraNum": cam.num,
            "cameraType": cam.kind,
            "location": cam.location,
            "status": status,
            "streamUrl": url,
            "imageSnapshot": url,
            "lastUpdate": iso(now),
            "dateModified": iso(now),
        }

    def initial(self, now: datetime) -> list[Entity]:
        steady_offline = self.P_FAIL / (self.P_FAIL + self.P_RECOVER)
        self.entities = {
            c.id: self._entity(c, "offline" if self.rng.random() < steady_offline else "online", now) for c in self.cameras
        }
        return list(self.entities.values())

    def step(self, now: datetime) -> Step:
        changed = []
        for cam in self.cameras:
            old = self.entities[cam.id]
            online = old["status"] == "online"
            flip = self.rng.random() < (self.P_FAIL if online else self.P_RECOVER)
            if flip:
                new = self._entity(cam, "offline" if online else "online", now)
                self.entities[cam.id] = new
                changed.append(new)
        return Step(changed)
