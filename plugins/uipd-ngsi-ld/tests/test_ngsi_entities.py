"""NGSI-LD representations to uipd entities, version keys, alert rules and strict options."""

import pytest
from ngsi_broker import NGSI_TYPES, normalized_entities, recorded, to_key_values

from uipd.config import ConfigError, structure_strict
from uipd_ngsi_ld.alerts import AlertTracker, matches
from uipd_ngsi_ld.entities import attribute_value, to_uipd, version_key
from uipd_ngsi_ld.options import AlertRule, EntityMapping, NgsiLdOptions
from uipd_ngsi_ld.plugin import create


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ({"type": "Property", "value": 42, "observedAt": "2025-12-09T10:00:00Z"}, 42),
        ({"type": "Relationship", "object": "urn:ngsi-ld:Camera:1"}, "urn:ngsi-ld:Camera:1"),
        ({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [106.69, 10.79]}}, {"lat": 10.79, "lng": 106.69}),
        ({"type": "GeoProperty", "value": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}}, {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}),
        ({"type": "Property", "value": {"@type": "DateTime", "@value": "2025-12-09T10:00:00Z"}}, "2025-12-09T10:00:00Z"),
        ({"type": "LanguageProperty", "languageMap": {"vi": "Cầu", "en": "Bridge"}}, {"vi": "Cầu", "en": "Bridge"}),
        ({"type": "ListProperty", "valueList": [1, 2]}, [1, 2]),
        ([{"type": "Property", "value": 1, "datasetId": "urn:a"}, {"type": "Property", "value": 2}], 2),
    ],
)
def test_normalized_attributes_become_plain_values(attribute, expected):
    assert attribute_value(attribute, normalized=True) == expected


def test_key_values_points_become_lat_lng_and_the_rest_stays():
    assert attribute_value({"type": "Point", "coordinates": [106.7, 10.8]}, normalized=False) == {"lat": 10.8, "lng": 106.7}
    assert attribute_value({"type": "Property", "value": 1}, normalized=False) == {"type": "Property", "value": 1}


@pytest.mark.parametrize("topic", list(NGSI_TYPES))
def test_recorded_entities_round_trip_in_both_forms(topic):
    """Every recorded HCMC entity served as NGSI-LD comes back as the uipd entity it was (plus the
    NGSI-LD type where the record had no ``type`` of its own)."""
    ngsi_type = NGSI_TYPES[topic]
    mapping = EntityMapping(ngsi_type, topic, fields={"type": "accidentType"} if topic == "accidents" else {})
    records = {r["id"]: {"type": ngsi_type, **r} for r in recorded(topic)}
    entities = normalized_entities(topic)
    assert len(entities) == len(records) > 10
    assert any("%20" in e["id"] for e in entities) or topic == "accidents"
    for entity in entities:
        assert to_uipd(entity, mapping, normalized=True) == records[entity["id"]]
        assert to_uipd(to_key_values(entity), mapping, normalized=False) == records[entity["id"]]


def test_field_mapping_renames_copies_and_can_drop_the_rest():
    entity = {"id": "c1", "type": "Camera", "cameraName": "Q1", "status": "online", "modifiedAt": "x"}
    assert to_uipd(entity, EntityMapping("Camera", "cameras", fields={"name": "cameraName"}), False) == {
        "id": "c1", "type": "Camera", "name": "Q1", "status": "online"
    }
    both = EntityMapping("Camera", "cameras", fields={"name": "cameraName", "cameraName": "cameraName"})
    assert to_uipd(entity, both, False)["cameraName"] == to_uipd(entity, both, False)["name"] == "Q1"
    only = EntityMapping("Camera", "cameras", fields={"label": "cameraName", "kind": "type"}, keep_unmapped=False)
    assert to_uipd(entity, only, False) == {"id": "c1", "label": "Q1", "kind": "Camera"}


def test_version_key_prefers_modified_at_then_timestamp_then_hash():
    e = {"id": "a", "type": "T", "v": 1, "dateObserved": "t1"}
    assert version_key({**e, "modifiedAt": "m1"}, "dateObserved", False) == "m:m1"
    assert version_key(e, "dateObserved", False) == version_key({**e, "v": 2}, "dateObserved", False)
    assert version_key(e, "", False) != version_key({**e, "v": 2}, "", False)
    assert version_key(e, "", False) == version_key(dict(reversed(list(e.items()))), "", False)


def test_alert_rules_and_only_new_matches_alert():
    rules = (AlertRule("severity", "in", ["severe", "fatal"]), AlertRule("aqi", ">", 150))
    assert matches(rules[1], {"aqi": 151}) and not matches(rules[1], {"aqi": "151"}) and not matches(rules[1], {})
    tracker = AlertTracker(rules)
    tracker.seed([{"id": "old", "aqi": 300}])
    assert tracker.check({"id": "old", "aqi": 301}) == []
    assert tracker.check({"id": "n", "aqi": 160, "severity": "fatal"}) == list(rules)
    assert tracker.check({"id": "n", "aqi": 170, "severity": "fatal"}) == []
    assert tracker.check({"id": "n", "aqi": 100, "severity": "fatal"}) == []
    assert tracker.check({"id": "n", "aqi": 200, "severity": "fatal"}) == [rules[1]]
    tracker.forget("n")
    assert tracker.check({"id": "n", "aqi": 200, "severity": "minor"}) == [rules[1]]


def load(table):
    return structure_strict(table, NgsiLdOptions, file="u.toml", root="sources.ctx")


def test_options_load_strictly_and_errors_name_the_key():
    o = load({
        "base_url": "http://broker:1026",
        "entities": [{"type": "AirQualityObserved", "topic": "airQuality", "fields": {"pm": "pm25"},
                      "alerts": [{"field": "aqi", "op": ">", "value": 150}, {"field": "level", "op": "in", "value": ["bad"]}]}],
    })
    assert o.entities[0].alerts[1].value == ["bad"] and o.format == "keyValues" and o.page_size == 100
    base = {"base_url": "http://b", "entities": [{"type": "T", "topic": "t"}]}
    cases = [
        ({**base, "page_size": "100"}, "sources.ctx.page_size: expected an integer"),
        ({**base, "format": "simplified"}, "sources.ctx.format: expected one of"),
        ({**base, "entities": [{"type": "T", "topic": "t", "alerts": [{"field": "a", "op": "~", "value": 1}]}]}, r"sources.ctx.entities\[0\].alerts\[0\].op|entities.*op"),
        ({**base, "entities": [{"type": "T", "topic": "t", "alerts": [{"field": "a", "op": "in", "value": 1}]}]}, "value must be an array"),
        ({**base, "entities": [{"type": "T", "topic": "t", "fields": {"a": 1}}]}, "fields"),
        ({**base, "entities": [{"type": "T", "topic": "t", "colour": 1}]}, "unknown key 'colour'"),
        ({"entities": base["entities"]}, "base_url: required key missing"),
    ]
    for table, message in cases:
        with pytest.raises(ConfigError, match=message):
            load(table)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"entities": ()}, "at least one"),
        ({"entities": (EntityMapping("A", "t"), EntityMapping("B", "t"))}, "each topic may appear once"),
        ({"push": True}, "notify_url: required"),
    ],
)
def test_create_checks_across_options(changes, message):
    with pytest.raises(ValueError, match=message):
        create(NgsiLdOptions(**{"base_url": "http://b", "entities": (EntityMapping("A", "a"),), **changes}))
