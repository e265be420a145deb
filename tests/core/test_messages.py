from __future__ import annotations

import json

import pytest

from uipd.core.errors import ClientError
from uipd.core.messages import Ping, SnapshotRequest, Subscribe, Unsubscribe, parse_client_message


def error_of(text: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        parse_client_message(text)
    return info.value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("{", id="truncated"),
        pytest.param("hello", id="plain-text"),
        pytest.param("{'action': 'ping'}", id="single-quotes"),
        pytest.param("[]", id="array"),
        pytest.param('["subscribe"]', id="array-of-str"),
        pytest.param("1", id="number"),
        pytest.param('"subscribe"', id="string"),
        pytest.param("null", id="null"),
        pytest.param("{}", id="no-action"),
        pytest.param('{"topics":["cameras"]}', id="topics-without-action"),
        pytest.param('{"action":null}', id="action-null"),
        pytest.param('{"action":1}', id="action-int"),
        pytest.param('{"action":["subscribe"]}', id="action-list"),
        pytest.param('{"action":{"x":1}}', id="action-object"),
        pytest.param('{"type":true}', id="legacy-type-bool"),
    ],
)
def test_bad_request(text: str) -> None:
    err = error_of(text)
    assert err.error_code == "bad_request"
    assert err.message


@pytest.mark.parametrize("action", ["publish", "SUBSCRIBE", "Ping", "", "pong"])
def test_unknown_action(action: str) -> None:
    err = error_of(json.dumps({"action": action, "topics": ["cameras"]}))
    assert err.error_code == "unknown_action"


def test_unknown_action_message_is_bounded() -> None:
    err = error_of(json.dumps({"action": "x" * 10_000}))
    assert err.error_code == "unknown_action"
    assert len(err.message) < 200


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="topics-missing"),
        pytest.param({"topics": None}, id="topics-null"),
        pytest.param({"topics": "cameras"}, id="topics-string"),
        pytest.param({"topics": {"cameras": True}}, id="topics-object"),
        pytest.param({"topics": 3}, id="topics-int"),
        pytest.param({"topics": ["cameras", 1]}, id="list-with-int"),
        pytest.param({"topics": ["cameras", None]}, id="list-with-null"),
        pytest.param({"topics": [["cameras"]]}, id="nested-list"),
        pytest.param({"channels": "cameras"}, id="legacy-channels-string"),
    ],
)
def test_bad_topics(action: str, extra: dict) -> None:
    err = error_of(json.dumps({"action": action, **extra}))
    assert err.error_code == "bad_request"


def test_subscribe() -> None:
    req = parse_client_message('{"action":"subscribe","topics":["cameras","accidents"]}')
    assert req == Subscribe(("cameras", "accidents"), snapshot=False)
    assert isinstance(req.topics, tuple)


def test_subscribe_empty_list_is_valid() -> None:
    assert parse_client_message('{"action":"subscribe","topics":[]}') == Subscribe(())


def test_subscribe_snapshot_flag() -> None:
    assert parse_client_message('{"action":"subscribe","topics":["cameras"],"snapshot":true}') == Subscribe(
        ("cameras",), snapshot=True
    )


@pytest.mark.parametrize("value", ["false", '"true"', "1", "null", "[]"])
def test_subscribe_snapshot_flag_only_literal_true(value: str) -> None:
    req = parse_client_message('{"action":"subscribe","topics":["cameras"],"snapshot":' + value + "}")
    assert req == Subscribe(("cameras",), snapshot=False)


def test_unsubscribe() -> None:
    assert parse_client_message('{"action":"unsubscribe","topics":["weather"]}') == Unsubscribe(("weather",))


def test_ping() -> None:
    assert parse_client_message('{"action":"ping"}') == Ping()
    assert parse_client_message('{"action":"ping","topics":5}') == Ping()


def test_snapshot_without_topics_means_subscribed_set() -> None:
    assert parse_client_message('{"action":"snapshot"}') == SnapshotRequest(None)


def test_snapshot_with_topics() -> None:
    assert parse_client_message('{"action":"snapshot","topics":["weather"]}') == SnapshotRequest(("weather",))
    assert parse_client_message('{"type":"snapshot","channels":["weather","all"]}') == SnapshotRequest(
        ("weather", "all")
    )


@pytest.mark.parametrize("topics", ['"weather"', "[1]", "{}"])
def test_snapshot_with_bad_topics(topics: str) -> None:
    assert error_of('{"action":"snapshot","topics":' + topics + "}").error_code == "bad_request"


def test_legacy_type_and_channels() -> None:
    assert parse_client_message('{"type":"subscribe","channels":["cameras"]}') == Subscribe(("cameras",))
    assert parse_client_message('{"type":"unsubscribe","channels":["cameras"]}') == Unsubscribe(("cameras",))
    assert parse_client_message('{"type":"ping"}') == Ping()
    assert parse_client_message('{"action":"subscribe","channels":["weather"],"snapshot":true}') == Subscribe(
        ("weather",), snapshot=True
    )


def test_action_wins_over_type_and_topics_over_channels() -> None:
    req = parse_client_message('{"action":"subscribe","type":"ping","topics":["a"],"channels":["b"]}')
    assert req == Subscribe(("a",))


def test_requests_are_frozen() -> None:
    req = parse_client_message('{"action":"subscribe","topics":["a"]}')
    with pytest.raises(AttributeError):
        req.topics = ("b",)  # type: ignore[misc]
