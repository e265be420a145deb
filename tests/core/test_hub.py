from __future__ import annotations

import json

import pytest

from tests.core.helpers import OP_PING, TOPICS, at, decode_one, drain, drain_frames, make_hub, types
from uipd.core import publish
from uipd.core.hub import Hub, Session
from uipd.core.outbound import CloseRequest

WELCOME = "Connected to HCMC Traffic Monitoring System"


def send(hub: Hub, session: Session, msg: object, t: float = 1.0) -> list[dict]:
    """The client sends ``msg`` (JSON-encoded unless a str); returns what it gets back."""
    hub.receive(session, msg if isinstance(msg, str) else json.dumps(msg), at(t))
    return drain(session)


def connected(hub: Hub, client_id: str, t: float = 0.0) -> Session:
    session = hub.connect(client_id, at(t))
    drain(session)
    return session


def subscribed_to(hub: Hub, client_id: str, topics: list[str]) -> Session:
    session = connected(hub, client_id)
    assert types(send(hub, session, {"action": "subscribe", "topics": topics})) == ["SUBSCRIBED"]
    return session


def update(topic: str | None, *entities: dict, removed: tuple = (), broadcast: bool = False) -> publish.Publication:
    return publish.update(topic, entities, removed, broadcast=broadcast)


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


# -- client messages -------------------------------------------------------------------------------


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
    assert msgs == [{"type": "SNAPSHOT", "data": {"weather": [{"id": "w"}]}, "timestamp": at(2).iso}]
    # Without topics: the subscribed set, in server order.
    assert list(send(hub, s, {"action": "snapshot"}, t=3)[0]["data"]) == ["cameras", "weather"]
    # Any topic may be asked for, and "all" means every topic.
    assert list(send(hub, s, {"action": "snapshot", "topics": ["accidents"]}, t=4)[0]["data"]) == ["accidents"]
    assert list(send(hub, s, {"action": "snapshot", "topics": ["all"]}, t=5)[0]["data"]) == TOPICS
    # A snapshot request changes no subscription.
    assert s.subscriptions.names == {"cameras", "weather"}


# -- publishing and routing ------------------------------------------------------------------------


def test_routing_reaches_exactly_topic_and_all_holders() -> None:
    hub = make_hub()
    everyone = connected(hub, "all")
    cams = subscribed_to(hub, "cams", ["cameras"])
    weather = subscribed_to(hub, "weather", ["weather"])
    nothing = connected(hub, "none")
    send(hub, nothing, {"action": "unsubscribe", "topics": ["all"]})

    res = hub.publish(update("cameras", {"id": "c1"}), at(5))
    assert res.recipients == 2
    assert res.seq == 1
    expected = {"type": "UPDATE", "topic": "cameras", "data": [{"id": "c1"}], "timestamp": at(5).iso, "seq": 1}
    assert drain(everyone) == [expected]
    assert drain(cams) == [expected]
    assert drain(weather) == []
    assert drain(nothing) == []

    res = hub.publish(publish.alert("weather", {"storm": True}), at(6))
    assert res.recipients == 2
    alert = {"type": "ALERT", "topic": "weather", "data": {"storm": True}, "timestamp": at(6).iso, "seq": 1}
    assert drain(everyone) == [alert]
    assert drain(weather) == [alert]
    assert drain(cams) == []
    assert drain(nothing) == []

    assert hub.publish(update("patterns", {"id": 1}), at(7)).recipients == 1
    assert drain(everyone)[0]["topic"] == "patterns"
    assert drain(cams) == drain(weather) == drain(nothing) == []


def test_broadcast_reaches_everyone() -> None:
    hub = make_hub()
    sessions = [connected(hub, "a"), subscribed_to(hub, "b", ["cameras"]), connected(hub, "c")]
    send(hub, sessions[2], {"action": "unsubscribe", "topics": ["all"]})

    res = hub.publish(publish.alert(None, "maintenance", broadcast=True), at(3))
    assert res == type(res)(None, 3)
    for s in sessions:
        assert drain(s) == [{"type": "ALERT", "data": "maintenance", "timestamp": at(3).iso}]

    res = hub.publish(update("weather", {"id": "w"}, broadcast=True), at(4))
    assert res.recipients == 3 and res.seq == 1
    for s in sessions:
        assert drain(s) == [{"type": "UPDATE", "topic": "weather", "data": [{"id": "w"}], "timestamp": at(4).iso, "seq": 1}]
    assert hub.stats()["topics"]["weather"]["entities"] == 1
    assert hub.counters.broadcasts == 2
    assert hub.counters.published == 0


def test_session_holding_all_and_a_topic_gets_one_copy() -> None:
    hub = make_hub()
    s = subscribed_to(hub, "c1", ["cameras", "all"])
    assert hub.publish(update("cameras", {"id": 1}), at(2)).recipients == 1
    assert len(drain(s)) == 1
    send(hub, s, {"action": "unsubscribe", "topics": ["all"]})
    assert hub.publish(update("weather", {"id": 1}), at(3)).recipients == 0
    assert hub.publish(update("cameras", {"id": 2}), at(3)).recipients == 1
    assert len(drain(s)) == 1


def test_seq_counts_per_topic_from_one() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    seqs = [
        hub.publish(update("cameras", {"id": 1}), at(1)).seq,
        hub.publish(update("weather", {"id": 1}), at(1)).seq,
        hub.publish(publish.alert("cameras", {}), at(1)).seq,
        hub.publish(update("cameras", {"id": 2}), at(1)).seq,
        hub.publish(update("weather", removed=(1,)), at(1)).seq,
    ]
    assert seqs == [1, 1, 2, 3, 2]
    assert [(m["topic"], m["seq"]) for m in drain(s)] == [
        ("cameras", 1),
        ("weather", 1),
        ("cameras", 2),
        ("cameras", 3),
        ("weather", 2),
    ]


def test_upsert_by_string_id_and_removed() -> None:
    hub = make_hub()
    hub.publish(update("cameras", {"id": 7, "v": 1}, {"id": "x", "v": 0}), at(1))
    hub.publish(update("cameras", {"id": "7", "v": 2}), at(2))
    assert hub.stats()["topics"]["cameras"]["entities"] == 2
    assert dict(hub.topics.state_of("cameras")) == {"7": {"id": "7", "v": 2}, "x": {"id": "x", "v": 0}}

    s = connected(hub, "c1", t=3)
    res = hub.publish(update("cameras", removed=(7,)), at(4))
    assert drain(s) == [{"type": "UPDATE", "topic": "cameras", "data": [], "removed": ["7"], "timestamp": at(4).iso, "seq": 3}]
    assert res.seq == 3
    snap = drain(hub.connect("c2", at(5)))[1]
    assert snap["data"]["cameras"] == [{"id": "x", "v": 0}]


def test_alert_does_not_change_state() -> None:
    hub = make_hub()
    hub.publish(update("accidents", {"id": "a1"}), at(1))
    before = drain_frames(hub.connect("c1", at(2)))[1]
    version = hub.topics.version
    res = hub.publish(publish.alert("accidents", {"id": "a2", "severity": "high"}), at(2))
    assert res.seq == 2
    assert hub.topics.version == version
    assert dict(hub.topics.state_of("accidents")) == {"a1": {"id": "a1"}}
    # The cached snapshot is still valid: same bytes object.
    assert drain_frames(hub.connect("c2", at(2)))[1] is before


def test_fan_out_frame_encoded_once() -> None:
    hub = make_hub()
    a, b = connected(hub, "a"), subscribed_to(hub, "b", ["accidents"])
    hub.publish(update("accidents", {"id": 1}), at(1))
    fa, fb = drain_frames(a), drain_frames(b)
    assert len(fa) == len(fb) == 1
    assert fa[0] is fb[0]
    hub.publish(publish.alert("accidents", {"x": 1}), at(1))
    fa, fb = drain_frames(a), drain_frames(b)
    assert fa[0] is fb[0]


def test_disconnect_removes_from_routing() -> None:
    hub = make_hub()
    a, b = connected(hub, "a"), subscribed_to(hub, "b", ["cameras"])
    hub.disconnect(b)
    hub.disconnect(a)
    assert hub.sessions == {}
    assert hub.publish(update("cameras", {"id": 1}), at(1)).recipients == 0
    assert hub.publish(publish.alert(None, 1, broadcast=True), at(1)).recipients == 0
    assert drain(a) == drain(b) == []


# -- slow consumers --------------------------------------------------------------------------------


def big(i: int) -> dict:
    return {"id": i, "blob": "x" * 300}


def test_slow_consumer_resync() -> None:
    hub = make_hub(max_queue_bytes=2000)
    slow = connected(hub, "slow")
    fast = connected(hub, "fast")
    fast_seqs = []
    overflowed_at = None
    for i in range(1, 11):
        res = hub.publish(update("cameras", big(i)), at(i))
        fast_seqs += [m["seq"] for m in drain(fast)]
        if overflowed_at is None and slow.outbound.resync_pending:
            overflowed_at = i
            assert res.recipients == 1  # only the fast client got it
            assert len(slow.outbound) == 0  # every queued UPDATE was dropped
            assert slow.outbound.queued_bytes == 0
    assert overflowed_at is not None and 2 < overflowed_at < 10
    assert fast_seqs == list(range(1, 11))
    assert hub.counters.resyncs == 1
    assert slow.outbound.dropped_updates == 10
    assert len(slow.outbound) == 0
    assert slow.outbound.closing is None

    # An ALERT is never dropped silently.
    assert hub.publish(publish.alert("cameras", {"boom": 1}), at(11)).recipients == 2
    assert drain(fast)[0]["type"] == "ALERT"
    # Not owed yet: the queue still holds the ALERT.
    assert not hub.take_resync(slow, at(12))
    msgs = drain(slow)
    assert msgs == [{"type": "ALERT", "topic": "cameras", "data": {"boom": 1}, "timestamp": at(11).iso, "seq": 11}]

    assert hub.take_resync(slow, at(12))
    assert not hub.take_resync(slow, at(12))
    msgs = drain(slow)
    assert len(msgs) == 1
    snap = msgs[0]
    assert snap["type"] == "SNAPSHOT"
    assert snap["resync"] is True
    assert list(snap["data"]) == TOPICS
    assert snap["data"]["cameras"] == [big(i) for i in range(1, 11)]

    # Live updates resume.
    res = hub.publish(update("cameras", {"id": "new"}), at(13))
    assert res.recipients == 2
    assert [(m["type"], m["seq"]) for m in drain(slow)] == [("UPDATE", 12)]
    assert hub.counters.resyncs == 1


def test_resync_snapshot_only_of_subscribed_topics() -> None:
    hub = make_hub(max_queue_bytes=1000)
    slow = subscribed_to(hub, "slow", ["cameras", "weather"])
    for i in range(10):
        hub.publish(update("cameras", big(i)), at(1))
    assert slow.outbound.resync_pending
    drain(slow)
    assert hub.take_resync(slow, at(2))
    snap = drain(slow)[0]
    assert snap["resync"] is True
    assert list(snap["data"]) == ["cameras", "weather"]


def test_alert_overflow_triggers_resync_and_is_kept() -> None:
    hub = make_hub(max_queue_bytes=2000)
    slow = connected(hub, "slow")
    n = 0
    while slow.outbound.queued_bytes + 400 < 2000:
        n += 1
        hub.publish(update("cameras", big(n)), at(1))
    assert not slow.outbound.resync_pending
    hub.publish(publish.alert("accidents", {"blob": "y" * 400}), at(2))
    assert slow.outbound.resync_pending
    assert slow.outbound.closing is None
    assert types(drain(slow)) == ["ALERT"]
    assert hub.take_resync(slow, at(3))
    assert drain(slow)[0]["resync"] is True


def test_slow_consumer_disconnect_mode() -> None:
    hub = make_hub(max_queue_bytes=2000, slow_consumer="disconnect")
    slow = connected(hub, "slow")
    fast = subscribed_to(hub, "fast", ["cameras"])
    got = []
    for i in range(1, 11):
        hub.publish(update("cameras", big(i)), at(i))
        got += drain(fast)
    hub.publish(publish.alert("cameras", {"a": 1}), at(11))
    got += drain(fast)
    assert [m["seq"] for m in got] == list(range(1, 12))
    assert slow.outbound.closing == CloseRequest(4008, "slow consumer", False)
    assert len(slow.outbound) == 0  # queued frames are dropped, not flushed
    assert not slow.outbound.resync_pending
    assert hub.counters.slow_disconnects == 1
    assert hub.counters.resyncs == 0
    assert not hub.take_resync(slow, at(12))
    assert hub.publish(update("cameras", {"id": 0}), at(12)).recipients == 1


# -- rate limit ------------------------------------------------------------------------------------


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


# -- heartbeat and shutdown ------------------------------------------------------------------------


def test_first_pings_jittered_within_one_interval() -> None:
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=30.0)
    sessions = [hub.connect(f"c{i}", at(0)) for i in range(30)]
    for s in sessions:
        drain(s)
    due = sorted(s.next_ping_at for s in sessions)
    assert all(0.0 <= t <= 10.0 for t in due)
    assert len(set(due)) > 20  # spread, not lockstep

    first_ping: dict[str, float] = {}
    t = 0.0
    while t <= 10.0:
        plan = hub.heartbeat(at(t))
        assert plan.dead == []
        for session, payload in plan.pings:
            assert session.id not in first_ping, "pinged twice within one interval"
            first_ping[session.id] = t
            frames = drain_frames(session)
            assert [decode_one(f) for f in frames] == [(OP_PING, payload)]
        t = round(t + 0.5, 3)
    assert set(first_ping) == {s.id for s in sessions}
    assert len(set(first_ping.values())) > 5
    for s in sessions:
        assert s.next_ping_at == pytest.approx(first_ping[s.id] + 10.0)


def test_ping_payloads_are_distinct_per_session() -> None:
    hub = make_hub(heartbeat_interval=1.0, heartbeat_timeout=30.0)
    s = connected(hub, "c1")
    payloads = []
    for t in (1.0, 2.0, 3.0):
        plan = hub.heartbeat(at(t))
        payloads += [p for _, p in plan.pings]
        drain(s)
    assert len(payloads) == 3
    assert len(set(payloads)) == 3
    assert all(len(p) <= 125 for p in payloads)


def test_silent_session_is_dead_after_timeout() -> None:
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=30.0)
    silent = connected(hub, "silent")
    pinger = connected(hub, "pinger")
    ponger = connected(hub, "ponger")
    send(hub, pinger, {"action": "ping"}, t=20)
    hub.pong(ponger, 25.0)
    assert hub.heartbeat(at(30.0)).dead == []
    plan = hub.heartbeat(at(30.5))
    assert plan.dead == [silent]
    assert silent not in [s for s, _ in plan.pings]
    assert hub.counters.heartbeat_drops == 1
    # Each is judged by its own last sign of life: pinger at 20, ponger at 25.
    assert hub.heartbeat(at(50.0)).dead == [silent]
    assert {s.id for s in hub.heartbeat(at(54.0)).dead} == {"silent", "pinger"}
    assert {s.id for s in hub.heartbeat(at(55.5)).dead} == {"silent", "pinger", "ponger"}


def test_heartbeat_skips_closing_sessions() -> None:
    hub = make_hub(heartbeat_interval=1.0, heartbeat_timeout=2.0)
    s = connected(hub, "c1")
    hub.close_all()
    plan = hub.heartbeat(at(100))
    assert plan.pings == [] and plan.dead == []


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
    assert stats["topics"]["cameras"] == {"subscribers": 3, "entities": 2, "seq": 2}
    assert stats["topics"]["weather"] == {"subscribers": 2, "entities": 0, "seq": 0}
    assert stats["topics"]["accidents"] == {"subscribers": 1, "entities": 0, "seq": 1}
    assert hub.subscriber_count("congestion") == 1
    hub.disconnect(b)
    stats = hub.stats()
    assert stats["clients"] == 2
    assert stats["topics"]["cameras"]["subscribers"] == 2
    assert hub.counters.connections == 3
    assert hub.counters.published == 3
    assert hub.counters.deliveries == 3 + 3 + 1


# -- regressions --------------------------------------------------------------------------------


def test_resubscribe_after_unsubscribe_from_default() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    send(hub, s, {"action": "unsubscribe", "topics": ["weather"]})
    msgs = send(hub, s, {"action": "subscribe", "topics": ["weather"]})
    assert set(msgs[0]["topics"]) >= set(TOPICS)
    assert hub.publish(update("cameras", {"id": 1}), at(2)).recipients == 1


def test_dropped_updates_counts_the_overflowing_update() -> None:
    hub = make_hub(max_queue_bytes=2000)
    slow = connected(hub, "slow")
    for i in range(1, 11):
        hub.publish(update("cameras", big(i)), at(i))
    assert slow.outbound.resync_pending
    # Ten UPDATEs published, none delivered.
    assert slow.outbound.dropped_updates == 10


# -- broadcasts under the resync policy (issue 12, item 6) ----------------------------------------


def test_broadcast_update_that_no_snapshot_holds_survives_a_resync() -> None:
    hub = make_hub(max_queue_bytes=2000)
    weather = subscribed_to(hub, "weather", ["weather"])  # not subscribed to cameras
    cams = subscribed_to(hub, "cams", ["cameras"])
    for i in range(1, 11):  # both fall behind: each owes a resync SNAPSHOT
        hub.publish(update("weather", big(i)), at(1))
        hub.publish(update("cameras", big(i)), at(1))
    assert weather.outbound.resync_pending and cams.outbound.resync_pending
    cams_seq = hub.publish(update("cameras", {"id": "b1"}, broadcast=True), at(2)).seq
    hub.publish(update(None, {"id": "b2"}, broadcast=True), at(2))
    # The weather client's resync SNAPSHOT has no cameras section and no SNAPSHOT holds a
    # topic-less UPDATE: both reach it, like ALERTs.
    got = drain(weather)
    assert [(m["type"], m.get("topic"), m["data"], m.get("seq")) for m in got] == [
        ("UPDATE", "cameras", [{"id": "b1"}], cams_seq),
        ("UPDATE", None, [{"id": "b2"}], None),
    ]
    # A cameras subscriber gets the cameras UPDATE through its resync SNAPSHOT (droppable), the
    # topic-less one directly.
    assert [m.get("topic") for m in drain(cams)] == [None]
    assert hub.take_resync(cams, at(3))
    assert {"id": "b1"} in drain(cams)[0]["data"]["cameras"]
    assert weather.outbound.closing is None and cams.outbound.closing is None


def test_broadcast_update_that_cannot_be_queued_closes_4008() -> None:
    hub = make_hub(max_queue_bytes=2000)
    weather = subscribed_to(hub, "weather", ["weather"])
    for i in range(1, 11):
        hub.publish(update("weather", big(i)), at(1))
    assert weather.outbound.resync_pending
    # never dropped silently: what does not fit closes the client (it reconnects and gets a SNAPSHOT)
    for i in range(10):
        hub.publish(update(None, big(i), broadcast=True), at(2))
    assert weather.outbound.closing == CloseRequest(4008, "slow consumer", False)
