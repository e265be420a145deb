"""The hub (uipd.core.hub): connect, the frame layer's events, shutdown and stats; the parts it
composes have their own files (test_sessions, test_dispatch, test_routing, test_liveness, ...)."""

from __future__ import annotations

import json

import pytest

from tests.core.helpers import TOPICS, WELCOME, at, connected, decode_one, drain, drain_frames, make_hub, subscribed_to, types, update
from uipd.core import publish
from uipd.core.hub import CLOSING_PARSE_BYTES
from uipd.core.outbound import CloseRequest


# -- connect ---------------------------------------------------------------------------------------


def test_connect_sends_connection_then_full_snapshot() -> None:
    hub = make_hub()
    hub.publish(update("weather", {"id": "w1", "t": 31}), at(0))
    session = hub.connect("c1", at(2))
    msgs = drain(session)
    assert msgs == [
        {
            "type": "connection",
            "message": WELCOME,
            "timestamp": at(2).iso,
            "heartbeatInterval": 10000,
            "clientId": "c1",
            "topics": TOPICS,
        },
        {
            "type": "SNAPSHOT",
            "data": {t: ([{"id": "w1", "t": 31}] if t == "weather" else []) for t in TOPICS},
            "positions": {t: {"seq": int(t == "weather"), "epoch": hub.topics.topics[t].epoch} for t in TOPICS},
            "timestamp": at(2).iso,
        },
    ]
    assert list(msgs[1]["data"]) == TOPICS
    assert hub.sessions == {"c1": session}


def test_connect_uses_settings() -> None:
    hub = make_hub(welcome="hi", heartbeat_interval=2.5, default_topics=("cameras", "weather"))
    msgs = drain(hub.connect("c9", at(0)))
    assert msgs[0]["message"] == "hi"
    assert msgs[0]["heartbeatInterval"] == 2500
    assert msgs[0]["topics"] == TOPICS  # every topic offered, not just the subscribed ones
    assert list(msgs[1]["data"]) == ["cameras", "weather"]


def test_snapshot_frame_encoded_once_for_many_clients() -> None:
    hub = make_hub()
    hub.publish(update("cameras", {"id": 1}), at(0))
    f1 = drain_frames(hub.connect("c1", at(1)))
    f2 = drain_frames(hub.connect("c2", at(1)))
    assert f1[1] is f2[1]
    hub.publish(update("cameras", {"id": 2}), at(1))
    f3 = drain_frames(hub.connect("c3", at(1)))
    assert f3[1] is not f1[1]
    _, payload = decode_one(f3[1])
    assert json.loads(payload)["data"]["cameras"] == [{"id": 1}, {"id": 2}]


# -- the frame layer's events ----------------------------------------------------------------------


def test_a_binary_message_is_closed_1003_after_what_is_queued() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    hub.publish(update("cameras", {"id": 1}), at(1))
    hub.receive_binary(s)
    assert s.outbound.closing == CloseRequest(1003, "binary frames are not supported", True)
    assert types(drain(s)) == ["UPDATE"]


@pytest.mark.parametrize(
    ("code", "reason", "violation", "expected", "stop"),
    [
        (1000, "", False, CloseRequest(1000, "", False), False),
        (4000, "bye", False, CloseRequest(4000, "bye", False), False),
        (1002, "", True, CloseRequest(1002, "protocol error", False), True),
        (1007, "invalid UTF-8", True, CloseRequest(1007, "invalid UTF-8", False), True),
    ],
)
def test_a_close_event_is_answered_and_after_a_violation_nothing_more_is_parsed(
    code: int, reason: str, violation: bool, expected: CloseRequest, stop: bool
) -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    hub.publish(update("cameras", {"id": 1}), at(1))
    assert hub.peer_close(s, code, reason, violation=violation) is stop
    assert s.outbound.closing == expected
    assert drain(s) == []  # a closing peer is not sent what was queued


def test_a_closing_connection_parses_one_budget_more_then_nothing() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    assert all(hub.keep_parsing(s, 10_000) for _ in range(3))  # open: no budget
    hub.close_all()
    assert hub.keep_parsing(s, CLOSING_PARSE_BYTES - 1)
    assert hub.keep_parsing(s, 1000)  # still under the budget before this chunk
    assert not hub.keep_parsing(s, 1)
    assert not hub.keep_parsing(s, 1)


# -- shutdown --------------------------------------------------------------------------------------


def test_close_all_requests_going_away_with_flush() -> None:
    hub = make_hub()
    a, b = connected(hub, "a"), connected(hub, "b")
    hub.publish(update("cameras", {"id": 1}), at(1))
    hub.close_all()
    for s in (a, b):
        assert s.outbound.closing == CloseRequest(1001, "going away", True)
        assert types(drain(s)) == ["UPDATE"]  # what was queued still goes out
    assert hub.publish(update("cameras", {"id": 2}), at(2)).recipients == 0
    assert drain(a) == []


# -- stats -----------------------------------------------------------------------------------------


def test_stats() -> None:
    hub = make_hub()
    connected(hub, "a")
    b = subscribed_to(hub, "b", ["cameras"])
    subscribed_to(hub, "c", ["cameras", "weather"])
    hub.publish(update("cameras", {"id": 1}, {"id": 2}), at(1))
    hub.publish(update("cameras", {"id": 2}), at(1))
    hub.publish(publish.alert("accidents", {}), at(1))
    stats = hub.stats()
    assert stats["clients"] == 3
    assert list(stats["topics"]) == TOPICS
    def basics(name: str) -> dict:
        return {k: stats["topics"][name][k] for k in ("subscribers", "entities", "seq")}

    assert basics("cameras") == {"subscribers": 3, "entities": 2, "seq": 2}
    assert basics("weather") == {"subscribers": 2, "entities": 0, "seq": 0}
    assert basics("accidents") == {"subscribers": 1, "entities": 0, "seq": 1}
    cameras = stats["topics"]["cameras"]
    assert cameras["epoch"] == hub.topics.topics["cameras"].epoch and len(cameras["epoch"]) >= 8
    assert cameras["history"] == 2 and cameras["historyBytes"] > 0
    assert stats["topics"]["weather"]["history"] == 0
    assert hub.subscriber_count("congestion") == 1
    hub.disconnect(b)
    stats = hub.stats()
    assert stats["clients"] == 2
    assert stats["topics"]["cameras"]["subscribers"] == 2
    assert hub.counters.connections == 3
    assert hub.counters.published == 3
    assert hub.counters.deliveries == 3 + 3 + 1
