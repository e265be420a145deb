"""Client messages and the rate limit (uipd.core.dispatch), driven through the hub."""

from __future__ import annotations

import pytest

from tests.core.helpers import TOPICS, at, connected, drain, make_hub, send, subscribed_to, types, update
from uipd.core.outbound import CloseRequest


def test_ping_action_gets_pong() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    assert send(hub, s, {"action": "ping"}, t=3) == [{"type": "PONG", "timestamp": at(3).iso}]
    assert send(hub, s, {"type": "ping"}, t=4) == [{"type": "PONG", "timestamp": at(4).iso}]


def test_subscribed_reply_is_whole_set_sorted() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    assert send(hub, s, {"action": "subscribe", "topics": ["weather", "cameras"]}, t=5) == [
        {"type": "SUBSCRIBED", "topics": ["cameras", "weather"], "timestamp": at(5).iso}
    ]
    assert send(hub, s, {"action": "subscribe", "topics": ["accidents"]}, t=6)[0]["topics"] == [
        "accidents",
        "cameras",
        "weather",
    ]
    assert send(hub, s, {"action": "unsubscribe", "topics": ["weather"]}, t=7)[0]["topics"] == ["accidents", "cameras"]
    assert send(hub, s, {"type": "subscribe", "channels": ["all"]}, t=8)[0]["topics"] == ["accidents", "all", "cameras"]


def test_unsubscribe_from_default_all() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    msgs = send(hub, s, {"action": "unsubscribe", "topics": ["weather"]})
    assert msgs == [{"type": "SUBSCRIBED", "topics": sorted(set(TOPICS) - {"weather"}), "timestamp": at(1).iso}]
    assert hub.publish(update("weather", {"id": 1}), at(2)).recipients == 0
    assert hub.publish(update("cameras", {"id": 1}), at(2)).recipients == 1
    assert types(drain(s)) == ["UPDATE"]
    # "all" is no longer held: unsubscribing it changes nothing.
    assert send(hub, s, {"action": "unsubscribe", "topics": ["all"]}, t=3)[0]["topics"] == sorted(set(TOPICS) - {"weather"})


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe", "snapshot"])
def test_unknown_topic_changes_nothing(action: str) -> None:
    hub = make_hub()
    s = subscribed_to(hub, "c1", ["cameras"])
    msgs = send(hub, s, {"action": action, "topics": ["cameras", "parking", "all", "bus"]}, t=7)
    assert len(msgs) == 1
    err = msgs[0]
    assert err["type"] == "ERROR"
    assert err["timestamp"] == at(7).iso
    assert err["error"]["code"] == "unknown_topic"
    assert err["error"]["topics"] == ["parking", "bus"]
    assert "parking" in err["error"]["message"] and "bus" in err["error"]["message"]
    assert s.subscriptions.names == {"cameras"}
    assert hub.publish(update("cameras", {"id": 1}), at(8)).recipients == 1
    assert hub.publish(update("weather", {"id": 1}), at(8)).recipients == 0
    assert s.outbound.closing is None


def test_unknown_topic_on_first_subscribe_keeps_default() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    assert send(hub, s, {"action": "subscribe", "topics": ["nope"]})[0]["error"]["code"] == "unknown_topic"
    assert s.subscriptions.wants_all
    # The failed request did not count as the first subscribe.
    assert send(hub, s, {"action": "subscribe", "topics": ["cameras"]})[0]["topics"] == ["cameras"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_request"),
        ("[1,2]", "bad_request"),
        ('{"topics":["cameras"]}', "bad_request"),
        ('{"action":"dance"}', "unknown_action"),
        ('{"action":"subscribe"}', "bad_request"),
        ('{"action":"subscribe","topics":"cameras"}', "bad_request"),
        ('{"action":"unsubscribe","topics":[1]}', "bad_request"),
    ],
)
def test_bad_input_answered_connection_stays(text: str, code: str) -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    other = connected(hub, "c2")
    msgs = send(hub, s, text)
    assert types(msgs) == ["ERROR"]
    assert msgs[0]["error"]["code"] == code
    assert s.outbound.closing is None
    assert s.subscriptions.wants_all
    assert hub.counters.client_errors == 1
    assert drain(other) == []
    assert send(hub, s, {"action": "ping"})[0]["type"] == "PONG"


def test_subscribe_with_snapshot_sends_only_new_topics() -> None:
    hub = make_hub()
    hub.publish(update("weather", {"id": "w"}), at(0))
    s = subscribed_to(hub, "c1", ["cameras"])
    msgs = send(hub, s, {"action": "subscribe", "topics": ["weather", "cameras", "accidents"], "snapshot": True}, t=3)
    assert types(msgs) == ["SUBSCRIBED", "SNAPSHOT"]
    assert msgs[0]["topics"] == ["accidents", "cameras", "weather"]
    assert msgs[1]["data"] == {"weather": [{"id": "w"}], "accidents": []}
    assert msgs[1]["timestamp"] == at(3).iso
    assert "resync" not in msgs[1]


def test_subscribe_without_snapshot_flag_sends_no_snapshot() -> None:
    hub = make_hub()
    s = subscribed_to(hub, "c1", ["cameras"])
    assert types(send(hub, s, {"action": "subscribe", "topics": ["weather"]})) == ["SUBSCRIBED"]


def test_first_subscribe_with_snapshot_from_default_all_adds_nothing() -> None:
    # The client already receives every topic; narrowing to one adds no topic, so the SNAPSHOT is empty.
    hub = make_hub()
    s = connected(hub, "c1")
    msgs = send(hub, s, {"action": "subscribe", "topics": ["cameras"], "snapshot": True})
    assert types(msgs) == ["SUBSCRIBED", "SNAPSHOT"]
    assert msgs[1]["data"] == {}


def test_snapshot_action() -> None:
    hub = make_hub()
    hub.publish(update("weather", {"id": "w"}), at(0))
    s = subscribed_to(hub, "c1", ["cameras", "weather"])
    msgs = send(hub, s, {"action": "snapshot", "topics": ["weather"]}, t=2)
    epoch = hub.topics.topics["weather"].epoch
    assert msgs == [
        {"type": "SNAPSHOT", "data": {"weather": [{"id": "w"}]}, "positions": {"weather": {"seq": 1, "epoch": epoch}}, "timestamp": at(2).iso}
    ]
    # Without topics: the subscribed set, in server order.
    assert list(send(hub, s, {"action": "snapshot"}, t=3)[0]["data"]) == ["cameras", "weather"]
    # Any topic may be asked for, and "all" means every topic.
    assert list(send(hub, s, {"action": "snapshot", "topics": ["accidents"]}, t=4)[0]["data"]) == ["accidents"]
    assert list(send(hub, s, {"action": "snapshot", "topics": ["all"]}, t=5)[0]["data"]) == TOPICS
    # A snapshot request changes no subscription.
    assert s.subscriptions.names == {"cameras", "weather"}


def test_rate_limit_error_then_close() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=3, rate_limit_strikes=2)
    s = connected(hub, "c1")
    other = connected(hub, "c2")
    for _ in range(3):
        hub.receive(s, '{"action":"ping"}', at(1))
    assert types(drain(s)) == ["PONG"] * 3
    for _ in range(2):
        hub.receive(s, '{"action":"ping"}', at(1))
    msgs = drain(s)
    assert [m["error"]["code"] for m in msgs] == ["rate_limited", "rate_limited"]
    assert s.outbound.closing is None
    hub.receive(s, '{"action":"ping"}', at(1))
    assert s.outbound.closing == CloseRequest(1008, "rate limit exceeded", True)
    assert drain(s) == []
    assert hub.counters.rate_limit_closes == 1
    # The neighbour is unaffected.
    assert types(send(hub, other, {"action": "ping"}, t=1)) == ["PONG"]


def test_rate_limit_queued_replies_flushed_before_close() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=1, rate_limit_strikes=1)
    s = connected(hub, "c1")
    hub.receive(s, '{"action":"ping"}', at(1))
    hub.receive(s, '{"action":"ping"}', at(1))
    hub.receive(s, '{"action":"ping"}', at(1))
    assert s.outbound.closing is not None and s.outbound.closing.flush
    assert types(drain(s)) == ["PONG", "ERROR"]


def test_rate_limit_recovers_with_time() -> None:
    hub = make_hub(rate_limit=2.0, rate_burst=1, rate_limit_strikes=5)
    s = connected(hub, "c1")
    assert types(send(hub, s, {"action": "ping"}, t=1)) == ["PONG"]
    assert types(send(hub, s, {"action": "ping"}, t=1)) == ["ERROR"]
    assert types(send(hub, s, {"action": "ping"}, t=1.5)) == ["PONG"]


def test_resubscribe_after_unsubscribe_from_default() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    send(hub, s, {"action": "unsubscribe", "topics": ["weather"]})
    msgs = send(hub, s, {"action": "subscribe", "topics": ["weather"]})
    assert set(msgs[0]["topics"]) >= set(TOPICS)
    assert hub.publish(update("cameras", {"id": 1}), at(2)).recipients == 1

