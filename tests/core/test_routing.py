"""Routing (uipd.core.routing): who a publication reaches, its effect on topic state, and the
slow-consumer policy."""

from __future__ import annotations

from tests.core.helpers import TOPICS, at, big, connected, drain, drain_frames, make_hub, send, subscribed_to, text_json, types, update
from uipd.core import publish
from uipd.core.outbound import CloseRequest


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
    drain_frames(hub.connect("c1", at(2)))
    section = hub.topics.topics["accidents"].section()
    res = hub.publish(publish.alert("accidents", {"id": "a2", "severity": "high"}), at(2))
    assert res.seq == 2
    assert dict(hub.topics.state_of("accidents")) == {"a1": {"id": "a1"}}
    # The section is still valid (same bytes object); the SNAPSHOT is not: it carries positions.
    assert hub.topics.topics["accidents"].section() is section
    after = text_json(drain_frames(hub.connect("c2", at(2)))[1])
    assert after["positions"]["accidents"]["seq"] == 2


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


def test_dropped_updates_counts_the_overflowing_update() -> None:
    hub = make_hub(max_queue_bytes=2000)
    slow = connected(hub, "slow")
    for i in range(1, 11):
        hub.publish(update("cameras", big(i)), at(i))
    assert slow.outbound.resync_pending
    # Ten UPDATEs published, none delivered.
    assert slow.outbound.dropped_updates == 10


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

