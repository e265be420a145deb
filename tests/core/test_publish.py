from __future__ import annotations

import datetime
import decimal
import timeit
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.core.helpers import at, drain, drain_frames, make_hub
from uipd.core import publish
from uipd.core.errors import PublishError, UnknownTopic
from uipd.core.publish import Publication, entity_key, from_api_body
from uipd.sources.publisher import HubPublisher

BENCH_DATA = Path("/work/shared/bench/data/hcmc-snapshot.json")


def test_valid_update_body() -> None:
    pub = from_api_body(
        {"topic": "cameras", "type": "UPDATE", "data": [{"id": 7, "x": 1}, {"id": "b"}], "removed": [3, "c"]},
        broadcast=False,
    )
    assert pub == Publication("UPDATE", "cameras", [{"id": 7, "x": 1}, {"id": "b"}], ("3", "c"), False, data_json=b"")
    assert pub.data_json == b'[{"id":7,"x":1},{"id":"b"}]'
    assert pub.upserts == [("7", {"id": 7, "x": 1}), ("b", {"id": "b"})]


def test_type_defaults_to_update_and_data_to_empty() -> None:
    pub = from_api_body({"topic": "cameras", "removed": ["1"]}, broadcast=False)
    assert pub.kind == "UPDATE"
    assert pub.data == []
    assert pub.removed == ("1",)


def test_single_entity_object_accepted() -> None:
    pub = from_api_body({"topic": "accidents", "type": "UPDATE", "data": {"id": "a1", "sev": 3}}, broadcast=False)
    assert pub.data == [{"id": "a1", "sev": 3}]
    assert pub.upserts == [("a1", {"id": "a1", "sev": 3})]


def test_valid_alert_body() -> None:
    pub = from_api_body({"topic": "accidents", "type": "ALERT", "data": {"msg": "crash"}}, broadcast=False)
    assert pub == Publication("ALERT", "accidents", {"msg": "crash"}, (), False, data_json=b"")
    assert pub.data_json == b'{"msg":"crash"}'
    assert pub.upserts == []
    # ALERT data may be any JSON value, even null.
    assert from_api_body({"topic": "accidents", "type": "ALERT", "data": None}, broadcast=False).data is None


def test_broadcast_body_topic_optional() -> None:
    pub = from_api_body({"type": "ALERT", "data": "hello"}, broadcast=True)
    assert pub.topic is None and pub.broadcast
    pub = from_api_body({"type": "UPDATE", "topic": "cameras", "data": []}, broadcast=True)
    assert pub.topic == "cameras" and pub.broadcast


BAD_BODIES: list[tuple[str, Any, bool]] = [
    ("not-an-object", [{"topic": "cameras"}], False),
    ("string-body", "cameras", False),
    ("type-delete", {"topic": "cameras", "type": "DELETE", "data": []}, False),
    ("type-lowercase", {"topic": "cameras", "type": "update", "data": []}, False),
    ("type-null", {"topic": "cameras", "type": None, "data": []}, False),
    ("missing-topic", {"type": "UPDATE", "data": []}, False),
    ("empty-topic", {"topic": "", "type": "UPDATE", "data": []}, False),
    ("topic-not-string", {"topic": 5, "type": "UPDATE", "data": []}, False),
    ("broadcast-topic-not-string", {"topic": 5, "type": "ALERT", "data": 1}, True),
    ("entity-without-id", {"topic": "cameras", "data": [{"name": "x"}]}, False),
    ("single-entity-without-id", {"topic": "cameras", "data": {"name": "x"}}, False),
    ("bool-id", {"topic": "cameras", "data": [{"id": True}]}, False),
    ("float-id", {"topic": "cameras", "data": [{"id": 1.5}]}, False),
    ("null-id", {"topic": "cameras", "data": [{"id": None}]}, False),
    ("entity-not-object", {"topic": "cameras", "data": ["x"]}, False),
    ("data-string", {"topic": "cameras", "data": "x"}, False),
    ("data-null", {"topic": "cameras", "data": None}, False),
    ("removed-string", {"topic": "cameras", "data": [], "removed": "1"}, False),
    ("removed-object", {"topic": "cameras", "data": [], "removed": {"id": 1}}, False),
    ("removed-bool", {"topic": "cameras", "data": [], "removed": [True]}, False),
    ("removed-entity", {"topic": "cameras", "data": [], "removed": [{"id": 1}]}, False),
    ("unknown-field", {"topic": "cameras", "data": [], "seq": 4}, False),
    ("alert-without-data", {"topic": "accidents", "type": "ALERT"}, False),
    ("alert-with-removed", {"topic": "accidents", "type": "ALERT", "data": {}, "removed": ["1"]}, False),
]


@pytest.mark.parametrize(("body", "broadcast"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies(body: Any, broadcast: bool) -> None:
    with pytest.raises(PublishError) as info:
        from_api_body(body, broadcast=broadcast)
    assert info.value.error_code == "bad_request"
    assert info.value.http_status == 400
    assert info.value.message


def test_unknown_field_is_named() -> None:
    with pytest.raises(PublishError, match="zzz"):
        from_api_body({"topic": "cameras", "zzz": 1}, broadcast=False)


def test_entity_key_int_and_str_are_the_same() -> None:
    assert entity_key({"id": 7}) == entity_key({"id": "7"}) == "7"


def test_source_helpers_validate_too() -> None:
    pub = publish.update("cameras", ({"id": i} for i in range(3)), removed=[9])
    assert pub.data == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert pub.removed == ("9",)
    assert publish.alert("accidents", {"a": 1}) == Publication("ALERT", "accidents", {"a": 1}, data_json=b"")
    with pytest.raises(PublishError):
        publish.update("cameras", [{"noid": 1}])
    with pytest.raises(PublishError):
        publish.update("cameras", [], removed=[False])


def test_unknown_topic_from_hub_publishes_nothing() -> None:
    hub = make_hub()
    session = hub.connect("c1", at(0))
    drain(session)
    for pub in (
        from_api_body({"topic": "parking", "data": [{"id": 1}]}, broadcast=False),
        from_api_body({"topic": "parking", "type": "ALERT", "data": 1}, broadcast=True),
    ):
        with pytest.raises(UnknownTopic) as info:
            hub.publish(pub, at(1))
        err = info.value
        assert isinstance(err, PublishError)
        assert err.error_code == "unknown_topic"
        assert err.http_status == 404
        assert err.topic == "parking"
    assert drain(session) == []
    assert all(t["seq"] == 0 and t["entities"] == 0 for t in hub.stats()["topics"].values())
    assert hub.counters.published == 0 and hub.counters.broadcasts == 0
    assert hub.topics.version == 0


# -- encoded once, before anything changes (issue 12, items 1, 2 and 7) ---------------------------


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


UNENCODABLE: list[tuple[str, Any, str]] = [
    ("set", {1, 2}, "set"),
    ("int-keys", {1: "a"}, "Dict key must be str"),
    ("decimal", decimal.Decimal("1.5"), "Decimal"),
    ("datetime", datetime.datetime(2025, 1, 1), "datetime"),  # orjson's own format is not the protocol's
    ("int-beyond-64-bits", 2**64, "64-bit"),
    ("negative-int-beyond-64-bits", -(2**63) - 1, "64-bit"),
    ("nested-300", _nested(300), "Recursion"),
    ("lone-surrogate", "\ud800", "surrogates"),
    ("nan", float("nan"), "NaN or infinite"),
    ("infinity", float("inf"), "NaN or infinite"),
    ("nan-deep-inside", {"a": [1, {"b": float("-inf")}]}, "['v']['a'][1]['b'] is NaN or infinite"),
]


@pytest.mark.parametrize(("value", "why"), [u[1:] for u in UNENCODABLE], ids=[u[0] for u in UNENCODABLE])
def test_unencodable_entity_is_refused_naming_it(value: Any, why: str) -> None:
    with pytest.raises(PublishError) as info:
        publish.update("cameras", [{"id": "ok"}, {"id": "bad", "v": value}])
    assert info.value.error_code == "bad_request" and info.value.http_status == 400
    assert "entity 1 (id 'bad')" in info.value.message and why in info.value.message
    with pytest.raises(PublishError, match="ALERT data"):
        publish.alert("accidents", {"v": value})


def test_entity_nested_just_too_deep_for_the_list_is_named() -> None:
    # alone it encodes (254 levels); inside the UPDATE's list it is one level too deep
    with pytest.raises(PublishError, match=r"entity 0 \(id 'x'\)"):
        publish.update("cameras", [{"id": "x", "v": _nested(253)}])
    publish.update("cameras", [{"id": "x", "v": _nested(252)}])


def test_api_body_nested_300_deep_is_refused() -> None:
    body = orjson.loads(b'{"topic":"accidents","data":[{"id":"x","v":' + b"[" * 300 + b"]" * 300 + b"}]}")
    with pytest.raises(PublishError, match=r"entity 0 \(id 'x'\) cannot be encoded"):
        from_api_body(body, broadcast=False)


def test_refused_publication_changes_nothing_in_the_hub() -> None:
    hub = make_hub()
    session = hub.connect("c1", at(0))
    drain(session)
    hub.publish(publish.update("cameras", [{"id": "a"}]), at(1))
    drain(session)
    before = (hub.stats(), hub.topics.version, hub.counters.published, hub.counters.deliveries)
    for bad in ([{"id": "a", "v": {1}}], [{"id": "b", "v": float("nan")}], [{"id": "c", "v": _nested(300)}]):
        with pytest.raises(PublishError):
            hub.publish(publish.update("cameras", bad), at(2))
    assert (hub.stats(), hub.topics.version, hub.counters.published, hub.counters.deliveries) == before
    assert drain(session) == []
    snapshot = drain(hub.connect("c2", at(3)))[1]  # a new client's SNAPSHOT still builds
    assert snapshot["data"]["cameras"] == [{"id": "a"}]


def test_data_is_encoded_once_and_spliced_into_the_frame() -> None:
    hub = make_hub()
    session = hub.connect("c1", at(0))
    drain(session)
    pub = publish.update("cameras", [{"id": 1, "name": "Ngã tư", "v": (1, 2)}])
    assert pub.data_json == '[{"id":1,"name":"Ngã tư","v":[1,2]}]'.encode()
    hub.publish(pub, at(1))
    (frame,) = drain_frames(session)
    assert b'"data":' + pub.data_json + b',"timestamp"' in frame
    alert = publish.alert("accidents", {"m": "x"})
    hub.publish(alert, at(2))
    assert b'"data":{"m":"x"},"timestamp"' in drain_frames(session)[0]


def test_a_publication_holds_the_hubs_own_copy() -> None:
    entity = {"id": "a", "v": [1], "tags": ("x",)}
    pub = publish.update("cameras", [entity])
    entity["v"].append(2)
    entity["new"] = True
    # canonical: what clients receive (a tuple is a JSON array), and shared with nobody
    assert pub.data == [{"id": "a", "v": [1], "tags": ["x"]}]
    data = {"sev": [1]}
    alert = publish.alert("accidents", data)
    data["sev"].append(2)
    assert alert.data == {"sev": [1]}


def test_mutate_then_replace_publishes_the_difference() -> None:
    hub = make_hub()
    session = hub.connect("c1", at(0))
    drain(session)
    publisher = HubPublisher(hub, lambda: at(1))
    cams = [{"id": "a", "status": "online"}, {"id": "b", "status": "online"}]
    publisher.replace("cameras", cams)
    assert drain(session)[0]["data"] == cams
    cams[1]["status"] = "offline"  # the source mutates what it published, then replaces
    seq = publisher.replace("cameras", cams)
    (msg,) = drain(session)
    assert msg["type"] == "UPDATE" and msg["seq"] == seq and msg["data"] == [{"id": "b", "status": "offline"}]
    assert publisher.replace("cameras", cams) is None  # unchanged now
    # canonical values compare equal to the hub's copies: a tuple is not a change every time
    publisher.replace("cameras", [*cams, {"id": "c", "pos": (1, 2)}])
    drain(session)
    assert publisher.replace("cameras", [*cams, {"id": "c", "pos": (1, 2)}]) is None


def test_non_finite_check_costs_little_on_a_realistic_publish() -> None:
    """The NaN/Infinity check on 50 real camera entities (most have no null: one substring search).
    Prints the figures with -s; asserts only a generous bound."""
    cams = orjson.loads(BENCH_DATA.read_bytes())["cameras"][:50] if BENCH_DATA.exists() else [
        {"id": f"cam{i}", "location": {"lat": 10.7 + i / 1000, "lng": 106.6}, "status": "online", "name": "x" * 80} for i in range(50)
    ]
    encoded = orjson.dumps(cams)
    runs = 300
    build = timeit.timeit(lambda: publish.update("cameras", cams), number=runs) / runs
    search = timeit.timeit(lambda: b"null" in encoded, number=runs) / runs
    print(f"\n50-entity publish built in {build * 1e6:.0f} us; NaN search {search * 1e6:.1f} us ({search / build:.0%})")
    assert search < build / 2
