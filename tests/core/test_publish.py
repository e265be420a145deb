from __future__ import annotations

from typing import Any

import pytest

from tests.core.helpers import at, drain, make_hub
from uipd.core import publish
from uipd.core.errors import PublishError, UnknownTopic
from uipd.core.publish import Publication, entity_key, from_api_body


def test_valid_update_body() -> None:
    pub = from_api_body(
        {"topic": "cameras", "type": "UPDATE", "data": [{"id": 7, "x": 1}, {"id": "b"}], "removed": [3, "c"]},
        broadcast=False,
    )
    assert pub == Publication("UPDATE", "cameras", [{"id": 7, "x": 1}, {"id": "b"}], ("3", "c"), False)
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
    assert pub == Publication("ALERT", "accidents", {"msg": "crash"}, (), False)
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
    assert publish.alert("accidents", {"a": 1}) == Publication("ALERT", "accidents", {"a": 1})
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
