"""Messages to entities, and the options' checks (no broker needed)."""

import pytest

from uipd.config import ConfigError, structure_strict
from uipd_mqtt.mapping import BadPayload, Change, route_for, to_change
from uipd_mqtt.options import MqttOptions, Route
from uipd_mqtt.plugin import create

AQ = Route("sensors/+/aq", "airQuality", id_level=2, id_prefix="urn:ngsi-ld:AirQualityObserved:")
CAM = Route("cams/#", "cameras", id_field="cameraNum")


def test_route_by_filter_and_id_from_level_or_field():
    assert route_for((AQ, CAM), "sensors/q1/aq") is AQ and route_for((AQ, CAM), "cams/d1/x") is CAM
    assert route_for((AQ, CAM), "sensors/q1/noise") is None
    assert to_change(AQ, "sensors/q1/aq", b'{"aqi": 80}', 100) == Change("airQuality", {"aqi": 80, "id": "urn:ngsi-ld:AirQualityObserved:q1"})
    assert to_change(CAM, "cams/x", b'{"cameraNum": 7}', 100) == Change("cameras", {"cameraNum": 7, "id": 7})
    # an empty (retained-clearing) payload with the id in the topic removes the entity
    assert to_change(AQ, "sensors/q1/aq", b"", 100) == Change("airQuality", None, "urn:ngsi-ld:AirQualityObserved:q1")


@pytest.mark.parametrize(
    ("route", "topic", "payload", "why"),
    [
        (AQ, "sensors/q1/aq", b"{not json", "not JSON"),
        (AQ, "sensors/q1/aq", b"\xff\xfe", "not JSON"),
        (AQ, "sensors/q1/aq", b"[1, 2]", "expected a JSON object"),
        (AQ, "sensors/q1/aq", b'{"pad": "' + b"x" * 200 + b'"}', "max_payload_bytes"),
        (CAM, "cams/x", b'{"name": "no id"}', "no usable id"),
        (CAM, "cams/x", b'{"cameraNum": true}', "no usable id"),
        (CAM, "cams/x", b"", "not JSON"),
        (Route("a/#", "t", id_level=3), "a/b", b"{}", "no level 3"),
        (AQ, "sensors/q1/aq", b'{"aqi": NaN}', "NaN is not a JSON value"),
        (AQ, "sensors/q1/aq", b'{"aqi": -Infinity}', "-Infinity is not a JSON value"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(route, topic, payload, why):
    with pytest.raises(BadPayload, match=why):
        to_change(route, topic, payload, 100)


def test_a_payload_nested_past_the_decoder_is_a_bad_payload():
    # json.loads raises RecursionError (not a ValueError) past ~1000 levels
    deep = b'{"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BadPayload, match="nested too deep"):
        to_change(AQ, "sensors/q1/aq", deep, len(deep))


def test_options_load_strictly_and_are_checked():
    table = {"host": "broker", "protocol": "3.1.1", "routes": [{"filter": "s/+/aq", "topic": "airQuality", "id_level": 2}]}
    o = structure_strict(table, MqttOptions, file="u.toml", root="sources.m")
    assert o.port == 1883 and o.qos == 1 and o.routes[0].id_level == 2
    for bad, message in [
        ({**table, "protocol": "4"}, "sources.m.protocol: expected one of"),
        ({**table, "port": "1883"}, "sources.m.port: expected an integer"),
        ({**table, "qos": 3}, "qos must be 0, 1 or 2"),
        ({**table, "routes": [{"filter": "x", "topic": "t", "idlevel": 1}]}, "unknown key 'idlevel'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            structure_strict(bad, MqttOptions, file="u.toml", root="sources.m")
    for options, message in [
        (MqttOptions(routes=()), "at least one"),
        (MqttOptions(routes=(Route("x", "t"),)), r"routes\[0\]: set exactly one"),
        (MqttOptions(routes=(Route("x", "t", id_field="a", id_level=1),)), "exactly one"),
        (MqttOptions(routes=(AQ,), ca_file="/ca.pem"), "tls: must be true"),
    ]:
        with pytest.raises(ValueError, match=message):
            create(options)
