"""The pure model: layout, determinism, entity shapes and the dynamics of each topic."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from sim_fakes import NIGHT, RUSH

from uipd_sim import air
from uipd_sim.air import aqi, level
from uipd_sim.city import DEFAULT_INTERVALS, TOPICS, City
from uipd_sim.common import BBOX, distance_km

# The field names of one entity per topic in the recorded city snapshot.
SAMPLE_KEYS = {
    "cameras": {"id", "name", "cameraName", "type", "cameraNum", "cameraType", "location", "status", "streamUrl",
                "imageSnapshot", "lastUpdate", "dateModified"},
    "weather": {"id", "cameraId", "location", "temperature", "humidity", "precipitation", "windSpeed",
                "windDirection", "weatherType", "pressure", "cloudiness", "dateObserved"},
    "airQuality": {"id", "cameraId", "location", "aqi", "pm25", "pm10", "no2", "o3", "co", "so2", "level",
                   "colorCode", "dateObserved"},
    "accidents": {"id", "type", "severity", "location", "timestamp", "description", "resolved", "casualties",
                  "confidence", "affectedCamera", "source"},
    "patterns": {"id", "patternType", "roadSegment", "location", "averageSpeed", "vehicleCount", "congestionLevel",
                 "timeOfDay", "dayOfWeek", "timeRange", "daysOfWeek", "affectedCameras", "avgVehicleCount",
                 "historicalData", "predictions", "timestamp"},
    "congestion": {"id", "cameraId", "location", "congested", "firstBreach", "lastUpdate", "patchSuccess",
                   "timestamp"},
}  # fmt: skip


@pytest.fixture(scope="module")
def city() -> City:
    c = City()
    for topic in TOPICS:
        c.initial(topic, RUSH)
    return c


def run(city: City, topic: str, ticks: int, start=NIGHT):
    """Step ``topic`` ``ticks`` times at its nominal interval; return the steps."""
    dt = timedelta(seconds=DEFAULT_INTERVALS[topic])
    return [city.step(topic, start + dt * (i + 1)) for i in range(ticks)]


def snapshot(seed: int, ticks: int = 5):
    c = City(seed=seed, cameras=120)
    out = {t: c.initial(t, NIGHT) for t in TOPICS}
    for t in TOPICS:
        out[t + "/steps"] = [(s.changed, s.removed, s.alerts) for s in run(c, t, ticks)]
    return out


def test_same_seed_same_city_different_seed_different_city():
    assert snapshot(7) == snapshot(7)
    assert snapshot(7)["cameras"] != snapshot(8)["cameras"]


def test_about_700_cameras_inside_the_bounding_box_and_clustered(city):
    cams = city.cameras
    assert len(cams) == 700
    assert len({c.id for c in cams}) == 700
    assert all(BBOX[0] <= c.lat <= BBOX[1] and BBOX[2] <= c.lng <= BBOX[3] for c in cams)
    near_centre = sum(distance_km((c.lat, c.lng), (10.78, 106.70)) < 6 for c in cams)
    # the 6 km circle is under a tenth of the box's area but holds far more of the cameras
    assert near_centre > 0.3 * len(cams)
    assert all(" - " in c.name for c in cams)


def test_every_location_in_every_topic_is_inside_the_box(city):
    def points(e):
        loc = e["location"]
        if "startPoint" in loc:
            return [(p["latitude"], p["longitude"]) for p in (loc["startPoint"], loc["endPoint"])]
        return [(loc["lat"], loc["lng"])]

    for topic in TOPICS:
        for e in city.sims[topic].entities.values() if topic != "accidents" else (o.entity for o in city.sims[topic].open.values()):
            for lat, lng in points(e):
                assert BBOX[0] <= lat <= BBOX[1] and BBOX[2] <= lng <= BBOX[3], (topic, e["id"])


def test_field_names_match_the_recorded_samples():
    c = City(cameras=50)
    for topic in TOPICS:
        entities = c.initial(topic, RUSH)
        assert entities, topic
        for e in entities:
            assert set(e) == SAMPLE_KEYS[topic], topic
        for s in run(c, topic, 30):
            for e in s.changed:
                assert set(e) == SAMPLE_KEYS[topic], topic


def test_initial_sizes_with_defaults(city):
    sizes = {t: len(city.sims[t].entities) for t in TOPICS if t != "accidents"}
    assert sizes == {"cameras": 700, "weather": 700, "airQuality": 700, "patterns": 175, "congestion": 233}
    assert 5 <= len(City().initial("accidents", RUSH)) <= 40


def test_value_ranges(city):
    for e in city.sims["weather"].entities.values():
        assert 24 <= e["temperature"] <= 36
        assert 0 <= e["humidity"] <= 100 and 0 <= e["cloudiness"] <= 100
        assert 990 <= e["pressure"] <= 1025 and e["precipitation"] >= 0 and e["windSpeed"] >= 0
    for e in city.sims["airQuality"].entities.values():
        assert (e["level"], e["colorCode"]) == level(e["aqi"])
    speeds = [e["averageSpeed"] for e in city.sims["patterns"].entities.values()]
    assert all(0 < s < 90 for s in speeds)


def test_weather_is_spatially_smooth(city):
    cams = city.cameras
    w = city.sims["weather"].entities
    near, far = [], []
    for a in cams[:150]:
        for b in cams[150:300]:
            d = distance_km((a.lat, a.lng), (b.lat, b.lng))
            diff = abs(w[f"urn:ngsi-ld:WeatherObserved:{a.id.rsplit(':', 1)[1]}"]["cloudiness"]
                       - w[f"urn:ngsi-ld:WeatherObserved:{b.id.rsplit(':', 1)[1]}"]["cloudiness"])  # fmt: skip
            (near if d < 1.0 else far if d > 15 else []).append(diff)
    assert near and far
    assert sum(near) / len(near) < sum(far) / len(far)


def test_aqi_follows_the_epa_bands():
    assert aqi(15.53, 27.76) == 58  # the recorded sample
    assert level(50) == ("good", "#00e400")
    assert level(151) == ("unhealthy", "#ff0000")
    assert level(301) == ("hazardous", "#7e0023")
    assert level(120) == ("unhealthy_for_sensitive_groups", "#ff7e00")
    assert level(250) == ("very_unhealthy", "#8f3f97")


@pytest.mark.parametrize("topic", TOPICS)
def test_a_tick_changes_only_a_subset(topic):
    c = City(seed=3)
    total = len(c.initial(topic, RUSH))
    steps = run(c, topic, 10, start=RUSH)
    sizes = [len(s.changed) + len(s.removed) for s in steps]
    assert any(sizes), topic
    if topic != "accidents":
        assert max(sizes) < 0.6 * total, (topic, sizes, total)


def test_accidents_appear_and_are_removed_over_time():
    c = City(seed=11)
    first = {e["id"] for e in c.initial("accidents", NIGHT)}
    sim = c.sims["accidents"]
    seen, removed, resolved_before_removal = set(first), set(), set()
    for s in run(c, "accidents", 6 * 120):  # two simulated hours
        for e in s.changed:
            if e["resolved"]:
                resolved_before_removal.add(e["id"])
            seen.add(e["id"])
        removed.update(s.removed)
        assert 1 <= len(sim.open) <= 40
    assert first <= removed  # every initial accident has cleared
    assert len(seen - first) > 20  # and new ones kept coming
    assert removed <= resolved_before_removal  # marked resolved first, then removed
    for o in sim.open.values():
        e = o.entity
        assert 0.6 <= e["confidence"] <= 0.99
        if e["severity"] == "fatal":
            assert e["casualties"] >= 1


def test_new_severe_and_fatal_accidents_alert_others_do_not():
    c = City(seed=5)
    c.initial("accidents", NIGHT)
    severe, alerts = [], []
    for s in run(c, "accidents", 6 * 240):
        severe += [e["id"] for e in s.changed if not e["resolved"] and e["severity"] in ("severe", "fatal")]
        alerts += s.alerts
    assert severe
    assert [a["id"] for a in alerts] == severe
    assert all(a["kind"] == "accident" and a["message"] and a["source"] == "DETR-CV-Analysis" for a in alerts)


def test_aqi_crossing_alerts_once(monkeypatch):
    monkeypatch.setattr(air, "REPORT_PROBABILITY", 1.0)  # every area reports every tick
    monkeypatch.setattr(air.AirQualitySim, "P_EPISODE", 0.0)  # no random episodes
    c = City(seed=2, cameras=60, aqi_alert_threshold=150)
    sim = c.sims["airQuality"]
    c.initial("airQuality", NIGHT)
    cam = c.cameras[0]
    key = f"urn:ngsi-ld:AirQualityObserved:{cam.id.rsplit(':', 1)[1]}"
    assert sim.entities[key]["aqi"] <= 150
    sim.start_episode(cam.lat, cam.lng, peak=250.0, radius_km=2.0, life=30)
    above, alerts = 0, []
    for s in run(c, "airQuality", 40):
        above += any(e["id"] == key and e["aqi"] > 150 for e in s.changed)
        alerts += [a for a in s.alerts if a["id"] == key]
    assert above > 5  # it stayed above for many reports ...
    assert len(alerts) == 1  # ... but alerted only on the crossing
    assert alerts[0]["kind"] == "air_quality" and alerts[0]["aqi"] > 150 and alerts[0]["threshold"] == 150


def test_rush_hour_is_slower_than_night():
    def mean_speed(t):
        c = City(seed=9, cameras=200)
        es = c.initial("patterns", t)
        return sum(e["averageSpeed"] for e in es) / len(es)

    assert mean_speed(RUSH) < 0.6 * mean_speed(NIGHT)


def test_congestion_flips_set_timestamps():
    c = City(seed=4)
    c.initial("congestion", RUSH)
    flips = [e for s in run(c, "congestion", 20, start=RUSH) for e in s.changed]
    assert any(e["congested"] for e in flips) and any(not e["congested"] for e in flips)
    for e in flips:
        if e["congested"]:
            assert e["firstBreach"] == e["lastUpdate"]
        assert e["timestamp"].endswith("Z") and not math.isnan(e["location"]["lat"])
