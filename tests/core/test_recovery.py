"""uipd.core.recovery (PROTOCOL.md section 8): since parsing, the per-topic outcome, the answer
(one SNAPSHOT then the replayed frames, the very objects first sent), the held queue of a
recovery waiting for remote history."""

from __future__ import annotations

import json

import pytest

from tests.core.helpers import TOPICS, at, connected, drain, drain_frames, make_hub, send, text_json, types, update
from uipd.core import publish
from uipd.core.admission import Refusal
from uipd.core.errors import ClientError
from uipd.core.hub import Hub
from uipd.core.outbound import Delivery, OutboundQueue
from uipd.core.recovery import (
    BAD_QUERY,
    FORBIDDEN_TOPIC,
    HandshakeAsk,
    PendingRecovery,
    Position,
    parse_handshake_query,
    parse_since,
)


def pos(hub: Hub, topic: str, seq: int | None = None) -> Position:
    state = hub.topics.topics[topic]
    return Position(state.seq if seq is None else seq, state.epoch)


def publish_n(hub: Hub, topic: str, n: int, t: float = 1.0, alert_every: int = 0) -> list[int]:
    seqs = []
    for i in range(n):
        if alert_every and i % alert_every == alert_every - 1:
            seqs.append(hub.publish(publish.alert(topic, {"n": i}), at(t)).seq)
        else:
            seqs.append(hub.publish(update(topic, {"id": f"e{i % 5}", "n": i}), at(t)).seq)
    return seqs


def reconnect(hub: Hub, client_id: str, since: dict[str, Position], topics: tuple[str, ...] | None = None, t: float = 2.0):
    session = hub.connect(client_id, at(t), topics=topics, since=since)
    frames = drain_frames(session)
    assert text_json(frames[0])["type"] == "connection"
    return session, frames[1:]


# -- parsing -----------------------------------------------------------------------------------


def test_parse_since() -> None:
    assert parse_since({"weather": {"seq": 3, "epoch": "abcdefgh"}}, TOPICS) == {"weather": Position(3, "abcdefgh")}
    assert parse_since({}, TOPICS) == {}
    for bad in ([], "x", {"weather": 3}, {"weather": {"seq": -1, "epoch": "e"}}, {"weather": {"seq": 1.5, "epoch": "e"}},
                {"weather": {"seq": True, "epoch": "e"}}, {"weather": {"seq": 1}}, {"weather": {"seq": 1, "epoch": 7}}, None):
        with pytest.raises(ClientError) as err:
            parse_since(bad, TOPICS)
        assert err.value.error_code == "bad_request"
    with pytest.raises(ClientError) as err:
        parse_since({"nope": {"seq": 1, "epoch": "e"}}, TOPICS)
    assert err.value.error_code == "unknown_topic" and err.value.topics == ("nope",)


def test_parse_handshake_query() -> None:
    since = json.dumps({"weather": {"seq": 2, "epoch": "E"}})
    from urllib.parse import quote

    assert parse_handshake_query("/", TOPICS, None) == HandshakeAsk()
    assert parse_handshake_query("/?token=x", TOPICS, None) == HandshakeAsk()
    ask = parse_handshake_query(f"/?topics=weather,accidents&since={quote(since)}&token=t", TOPICS, None)
    assert ask == HandshakeAsk(("weather", "accidents"), {"weather": Position(2, "E")})
    assert parse_handshake_query("/?topics=all", TOPICS, None) == HandshakeAsk(("all",), None)
    assert parse_handshake_query("/?topics=weather,nope", TOPICS, None) is BAD_QUERY
    assert parse_handshake_query("/?since=%7Bbad", TOPICS, None) is BAD_QUERY
    assert parse_handshake_query("/?since=" + quote('{"nope":{"seq":1,"epoch":"E"}}'), TOPICS, None) is BAD_QUERY
    assert parse_handshake_query("/?since=" + quote('{"weather":{"seq":"1","epoch":"E"}}'), TOPICS, None) is BAD_QUERY
    assert parse_handshake_query("/?topics=weather,cameras", TOPICS, None, max_subscriptions=1) is BAD_QUERY
    claim = frozenset({"weather"})
    assert parse_handshake_query("/?topics=weather", TOPICS, claim) == HandshakeAsk(("weather",), None)
    refusal = parse_handshake_query("/?topics=weather,cameras", TOPICS, claim)
    assert refusal is FORBIDDEN_TOPIC and isinstance(refusal, Refusal) and refusal.status == 403
    assert parse_handshake_query("/?topics=all", TOPICS, claim) is FORBIDDEN_TOPIC
    assert BAD_QUERY.status == 400


# -- the answer on connect -----------------------------------------------------------------------


def test_replay_is_the_very_frames_live_clients_got() -> None:
    hub = make_hub()
    publish_n(hub, "weather", 3)
    live = connected(hub, "live")
    mark = pos(hub, "weather")
    publish_n(hub, "weather", 4, alert_every=2)
    sent = drain_frames(live)
    assert len(sent) == 4
    session, frames = reconnect(hub, "back", {"weather": mark}, topics=("weather",))
    answer = text_json(frames[0])
    assert answer["type"] == "SNAPSHOT" and answer["data"] == {} and answer["positions"] == {}
    assert answer["recovered"] == ["weather"] and answer["missedAlerts"] == {} and answer["alertsLost"] == []
    assert len(frames) == 5 and all(a is b for a, b in zip(frames[1:], sent))
    assert [text_json(f)["seq"] for f in frames[1:]] == [4, 5, 6, 7]
    assert hub.counters.recoveries["replayed"] == 1 and hub.counters.replayed_messages == 4
    # live messages follow the replay
    hub.publish(update("weather", {"id": "z"}), at(3))
    assert text_json(drain_frames(session)[0])["seq"] == 8


def test_zero_replay_at_the_head_and_sections_for_topics_without_position() -> None:
    hub = make_hub()
    publish_n(hub, "weather", 2)
    publish_n(hub, "cameras", 1)
    session, frames = reconnect(hub, "c", {"weather": pos(hub, "weather")})  # default set: all
    assert len(frames) == 1
    answer = text_json(frames[0])
    assert answer["recovered"] == ["weather"]
    assert list(answer["data"]) == [t for t in TOPICS if t != "weather"]
    assert answer["positions"]["cameras"] == {"seq": 1, "epoch": hub.topics.topics["cameras"].epoch}
    assert set(answer["positions"]) == set(answer["data"])


def test_wrong_epoch_and_seq_ahead_are_alerts_lost() -> None:
    hub = make_hub()
    publish_n(hub, "weather", 3)
    publish_n(hub, "accidents", 2)
    since = {"weather": Position(2, "other-epoch"), "accidents": pos(hub, "accidents", 9)}
    _, frames = reconnect(hub, "c", since, topics=("weather", "accidents"))
    answer = text_json(frames[0])
    assert len(frames) == 1
    assert answer["recovered"] == [] and sorted(answer["alertsLost"]) == ["accidents", "weather"]
    assert set(answer["data"]) == {"weather", "accidents"}
    assert answer["positions"]["weather"]["seq"] == 3 and answer["positions"]["accidents"]["seq"] == 2
    assert hub.counters.recoveries["epoch_changed"] == 2


def test_beyond_history_is_too_old() -> None:
    hub = make_hub(history_size=3)
    publish_n(hub, "weather", 10)
    _, frames = reconnect(hub, "c", {"weather": pos(hub, "weather", 5)}, topics=("weather",))
    answer = text_json(frames[0])
    assert answer["alertsLost"] == ["weather"] and "weather" in answer["data"] and len(frames) == 1
    assert hub.counters.recoveries["too_old"] == 1
    # still within: replayed
    _, frames = reconnect(hub, "d", {"weather": pos(hub, "weather", 7)}, topics=("weather",))
    assert text_json(frames[0])["recovered"] == ["weather"] and len(frames) == 4


def test_over_max_replay_is_a_section_with_the_gaps_alerts() -> None:
    hub = make_hub(max_replay=3)
    mark = pos(hub, "accidents")
    publish_n(hub, "accidents", 6, alert_every=2)  # seqs 2, 4, 6 are ALERTs
    _, frames = reconnect(hub, "c", {"accidents": mark}, topics=("accidents",))
    answer = text_json(frames[0])
    assert len(frames) == 1 and answer["recovered"] == [] and answer["alertsLost"] == []
    alerts = answer["missedAlerts"]["accidents"]
    assert [a["seq"] for a in alerts] == [2, 4, 6] and all(a["type"] == "ALERT" and a["topic"] == "accidents" for a in alerts)
    assert alerts[0]["data"] == {"n": 1}
    assert answer["positions"]["accidents"]["seq"] == 6
    assert hub.counters.recoveries["too_many"] == 1


def test_the_bytes_rule_prefers_a_smaller_section() -> None:
    hub = make_hub()
    hub.publish(update("cameras", {"id": "c", "blob": "y"}), at(1))
    mark = pos(hub, "cameras")
    for _ in range(30):  # 30 x ~3 KB replaced by a section of ~3 KB
        hub.publish(update("cameras", {"id": "c", "blob": "x" * 3000}), at(1))
    _, frames = reconnect(hub, "c", {"cameras": mark}, topics=("cameras",))
    answer = text_json(frames[0])
    assert answer["recovered"] == [] and answer["missedAlerts"] == {"cameras": []} and len(frames) == 1


def test_several_topics_mixed_outcomes_in_one_answer() -> None:
    hub = make_hub(max_replay=2)
    marks = {t: pos(hub, t) for t in ("weather", "accidents", "cameras")}
    publish_n(hub, "weather", 2)
    publish_n(hub, "accidents", 4, alert_every=1)
    since = {**marks, "patterns": Position(0, "wrong")}
    _, frames = reconnect(hub, "c", since, topics=("weather", "accidents", "cameras", "patterns", "congestion"))
    answer = text_json(frames[0])
    assert answer["recovered"] == ["cameras", "weather"]  # server order
    assert [a["seq"] for a in answer["missedAlerts"]["accidents"]] == [1, 2, 3, 4]
    assert answer["alertsLost"] == ["patterns"]
    assert list(answer["data"]) == ["accidents", "patterns", "congestion"]  # server order
    assert [text_json(f)["seq"] for f in frames[1:]] == [1, 2]


def test_since_for_topics_outside_the_set_is_ignored() -> None:
    hub = make_hub()
    publish_n(hub, "weather", 2)
    _, frames = reconnect(hub, "c", {"weather": pos(hub, "weather", 0)}, topics=("cameras",))
    answer = text_json(frames[0])
    assert answer["recovered"] == [] and list(answer["data"]) == ["cameras"] and len(frames) == 1


def test_history_off_recovers_only_at_the_head() -> None:
    hub = make_hub(history_size=0)
    publish_n(hub, "weather", 2)
    _, frames = reconnect(hub, "c", {"weather": pos(hub, "weather")}, topics=("weather",))
    assert text_json(frames[0])["recovered"] == ["weather"]
    _, frames = reconnect(hub, "d", {"weather": pos(hub, "weather", 1)}, topics=("weather",))
    answer = text_json(frames[0])
    assert answer["alertsLost"] == ["weather"] and "weather" in answer["data"]
    assert hub.topics.topics["weather"].history.messages == 0


def test_a_broadcast_naming_a_topic_enters_its_history() -> None:
    hub = make_hub()
    mark = pos(hub, "accidents")
    res = hub.publish(publish.alert("accidents", {"b": 1}, broadcast=True), at(1))
    assert res.seq == 1
    _, frames = reconnect(hub, "c", {"accidents": mark}, topics=("accidents",))
    assert [text_json(f)["seq"] for f in frames[1:]] == [1]


def test_every_snapshot_carries_positions_also_the_resync() -> None:
    hub = make_hub(max_queue_bytes=2000)
    s = connected(hub, "c")
    publish_n(hub, "weather", 1)
    drain(s)
    snap = send(hub, s, {"action": "snapshot"}, t=2)
    assert snap[0]["positions"]["weather"]["seq"] == 1 and set(snap[0]["positions"]) == set(TOPICS)
    for i in range(40):
        hub.publish(update("cameras", {"id": i, "blob": "x" * 200}), at(3))
    assert s.outbound.resync_pending
    drain_frames(s)
    assert hub.take_resync(s, at(4))
    resync = drain(s)[0]
    assert resync["resync"] is True and resync["positions"]["cameras"]["seq"] == 40


# -- subscribe with since ------------------------------------------------------------------------


def test_subscribe_with_since_answers_after_subscribed() -> None:
    hub = make_hub()
    s = connected(hub, "c")
    send(hub, s, {"action": "subscribe", "topics": ["accidents"]})
    mark = pos(hub, "weather")
    publish_n(hub, "weather", 2)
    msgs = send(hub, s, {"action": "subscribe", "topics": ["weather", "cameras"], "snapshot": True,
                         "since": {"weather": {"seq": mark.seq, "epoch": mark.epoch}}})
    assert types(msgs) == ["SUBSCRIBED", "SNAPSHOT", "UPDATE", "UPDATE"]
    assert msgs[1]["recovered"] == ["weather"] and list(msgs[1]["data"]) == ["cameras"]
    assert [m["seq"] for m in msgs[2:]] == [1, 2]
    assert s.snapshot_budget is not None  # charged like a requested SNAPSHOT


def test_subscribe_with_malformed_since_changes_nothing() -> None:
    hub = make_hub()
    s = connected(hub, "c")
    for since in ({"weather": {"seq": "x"}}, [1], {"nope": {"seq": 1, "epoch": "e"}}):
        msgs = send(hub, s, {"action": "subscribe", "topics": ["weather"], "since": since})
        assert types(msgs) == ["ERROR"] and msgs[0]["error"]["code"] in ("bad_request", "unknown_topic")
        assert s.subscriptions.names == {"all"} and not s.subscriptions.explicit


def test_subscribe_with_since_over_the_budget_is_rate_limited() -> None:
    hub = make_hub(snapshot_budget_bytes=10, snapshot_burst_bytes=10)
    s = connected(hub, "c")
    hub.publish(update("weather", {"id": "w", "blob": "x" * 100}), at(1))
    drain(s)
    send(hub, s, {"action": "snapshot", "topics": ["weather"]})  # empties the bucket
    msgs = send(hub, s, {"action": "subscribe", "topics": ["weather"], "since": {"weather": {"seq": 0, "epoch": "wrong"}}})
    assert types(msgs) == ["SUBSCRIBED", "ERROR"] and msgs[1]["error"]["code"] == "rate_limited"


# -- remote history: the held queue --------------------------------------------------------------


class Reader:
    def __init__(self) -> None:
        self.pending: list[PendingRecovery] = []

    def request(self, pending: PendingRecovery) -> None:
        self.pending.append(pending)


def test_a_recovery_waiting_for_remote_history_holds_live_messages_behind_it() -> None:
    hub = make_hub(history_size=3)
    reader = Reader()
    hub.history_reader = reader
    publish_n(hub, "weather", 10)
    old = [e for e in hub.topics.topics["weather"].history.after(7, 0.0)]  # what "Redis" holds: rebuilt below
    session = hub.connect("c", at(2), topics=("weather",), since={"weather": pos(hub, "weather", 4)})
    assert [m["type"] for m in drain(session)] == ["connection"]
    (pending,) = reader.pending
    assert pending.remote == {"weather": (4, 10)} and pending.upto_by_topic == {"weather": 10}
    hub.publish(update("weather", {"id": "late"}), at(3))  # queued behind the hold
    assert drain(session) == []
    from uipd.core.history import HistoryEntry

    fetched = [HistoryEntry(s, publish_frame(hub, s), False, 0.0) for s in range(5, 8)] + old
    hub.complete_recovery(pending, {"weather": fetched}, at(4))
    msgs = drain(session)
    assert msgs[0]["type"] == "SNAPSHOT" and msgs[0]["recovered"] == ["weather"]
    assert [m["seq"] for m in msgs[1:]] == [5, 6, 7, 8, 9, 10, 11]


def publish_frame(hub: Hub, seq: int) -> bytes:
    from uipd.core import wire

    return wire.message_frame("UPDATE", "weather", b"[]", None, at(1).iso, seq)


def test_remote_history_that_cannot_be_read_is_alerts_lost_and_a_gone_client_gets_nothing() -> None:
    hub = make_hub(history_size=2)
    reader = Reader()
    hub.history_reader = reader
    publish_n(hub, "weather", 6)
    session = hub.connect("c", at(2), topics=("weather",), since={"weather": pos(hub, "weather", 1)})
    drain(session)
    hub.complete_recovery(reader.pending[0], {"weather": None}, at(3))
    answer = drain(session)[0]
    assert answer["alertsLost"] == ["weather"] and "weather" in answer["data"]
    gone = hub.connect("g", at(2), topics=("weather",), since={"weather": pos(hub, "weather", 1)})
    hub.disconnect(gone)
    hub.complete_recovery(reader.pending[1], {"weather": None}, at(3))
    assert len(gone.outbound) == 1  # only the connection message it had


def test_held_too_many_lists_the_alerts_that_came_while_reading() -> None:
    hub = make_hub(history_size=100, max_replay=1)
    reader = Reader()
    hub.history_reader = reader
    hub.topics.topics["accidents"].history.configure(0, 300)  # local history lacks the gap
    publish_n(hub, "accidents", 3, alert_every=1)
    hub.topics.topics["accidents"].history.configure(100, 300)
    session = hub.connect("c", at(2), topics=("accidents",), since={"accidents": pos(hub, "accidents", 0)})
    drain(session)
    hub.publish(publish.alert("accidents", {"late": True}), at(3))  # seq 4, behind the hold
    from uipd.core import wire
    from uipd.core.history import HistoryEntry

    fetched = [HistoryEntry(s, wire.message_frame("ALERT", "accidents", b"{}", None, "T", s), True, 0.0) for s in (1, 2, 3)]
    hub.complete_recovery(reader.pending[0], {"accidents": fetched}, at(4))
    msgs = drain(session)
    assert msgs[0]["positions"]["accidents"]["seq"] == 4
    assert [a["seq"] for a in msgs[0]["missedAlerts"]["accidents"]] == [1, 2, 3, 4]


# -- the queue's hold ----------------------------------------------------------------------------


def test_outbound_hold_and_release() -> None:
    woken: list[int] = []
    q = OutboundQueue(100, lambda: woken.append(1))
    q.offer(b"a", Delivery.RELIABLE)
    q.hold()
    q.offer(b"b", Delivery.DROPPABLE)
    q.offer(b"p", Delivery.PONG)
    assert q.take() == [b"a"] and q.held
    q.written()
    q.offer(b"c", Delivery.RELIABLE)
    assert q.take() == []
    q.start_resync()  # drops b; the hold point stays right
    q.release([b"S" * 500, b"r"])
    assert not q.held and woken
    assert q.take() == [b"S" * 500, b"r", b"p", b"c"]
    assert q.inflight_snapshot_bytes == 501 and q.inflight_bytes == 2


def test_release_without_hold_appends_one_unit_past_the_bound() -> None:
    q = OutboundQueue(10)
    q.offer(b"0123456789", Delivery.RELIABLE)
    q.release([b"x" * 50, b"y" * 50])
    assert q.take() == [b"0123456789", b"x" * 50, b"y" * 50]




def test_new_history_settings_apply_to_every_topic() -> None:
    from uipd.core.settings import HubSettings

    hub = make_hub()
    publish_n(hub, "weather", 10)
    hub.apply_settings(HubSettings(history_size=3, max_replay=1))
    history = hub.topics.topics["weather"].history
    assert history.messages == 3 and history.first_seq == 8
    _, frames = reconnect(hub, "c", {"weather": pos(hub, "weather", 8)}, topics=("weather",))
    assert text_json(frames[0])["missedAlerts"] == {"weather": []}  # 2 > max_replay 1
    hub.add_topics(["fresh"])
    assert hub.topics.topics["fresh"].history.size == 3
    hub.apply_settings(HubSettings(history_size=0))
    assert history.messages == 0 and history.bytes == 0


# -- the property, on the core: whatever the cuts, no silent loss ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(["weather", "accidents"]), st.booleans()),
        st.tuples(st.just("read"), st.integers(0, 2), st.integers(0, 6)),
        st.tuples(st.just("cut"), st.integers(0, 2), st.integers(0, 6)),
        st.tuples(st.just("complete"), st.booleans(), st.just(0)),
    ),
    max_size=60,
)


class Store:
    """A remote history (what Redis would hold): every frame ever sent, read by a recorder client;
    recoveries wait until a ``complete`` step answers them (or fails to: None)."""

    def __init__(self, hub: Hub) -> None:
        from uipd.core.history import HistoryEntry

        self.entry = HistoryEntry
        self.hub = hub
        self.recorder = hub.connect("recorder", at(0))
        self.frames: dict[str, dict[int, tuple[bytes, bool]]] = {"weather": {}, "accidents": {}}
        self.pending: list[PendingRecovery] = []

    def record(self) -> None:
        for frame in self.recorder.outbound.take():
            m = text_json(frame)
            if m["type"] in ("UPDATE", "ALERT") and m.get("topic") in self.frames:
                self.frames[m["topic"]][m["seq"]] = (frame, m["type"] == "ALERT")
        self.recorder.outbound.written()

    def request(self, pending: PendingRecovery) -> None:
        self.pending.append(pending)

    def complete(self, readable: bool) -> None:
        if not self.pending:
            return
        pending = self.pending.pop(0)
        fetched = {}
        for topic, (since, upto) in pending.remote.items():
            got = [self.entry(s, *self.frames[topic][s], 0.0) for s in range(since + 1, upto + 1)]
            fetched[topic] = got if readable else None
        self.hub.complete_recovery(pending, fetched, at(1))


class CoreClient:
    """A client following the section 8 rules, reading frames from its session's queue."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub, self.name, self.n = hub, name, 0
        self.pos: dict[str, dict] = {}
        self.state: dict[str, dict] = {}
        self.alerts: set[tuple[str, int]] = set()
        self.lost: set[str] = set()
        self.first: dict[str, int] = {}
        self.session = self._open(None)
        self.read()
        self.first = {t: p["seq"] for t, p in self.pos.items()}

    def _open(self, since: dict[str, Position] | None):
        self.n += 1
        session = self.hub.connect(f"{self.name}-{self.n}", at(1), topics=("weather", "accidents"), since=since)
        self.pending = list(session.outbound.take())
        session.outbound.written()
        return session

    def read(self, k: int | None = None) -> None:
        self.pending += self.session.outbound.take()
        self.session.outbound.written()
        take = self.pending if k is None else self.pending[:k]
        self.pending = [] if k is None else self.pending[k:]
        for frame in take:
            self.apply(text_json(frame))

    def apply(self, m: dict) -> None:
        if m["type"] == "SNAPSHOT":
            for t, ents in m["data"].items():
                self.state[t] = {e["id"]: e for e in ents}
                self.pos[t] = m["positions"][t]
            for t, alerts in m.get("missedAlerts", {}).items():
                self.alerts.update((t, a["seq"]) for a in alerts)
            self.lost.update(m.get("alertsLost", ()))
        elif m["type"] in ("UPDATE", "ALERT"):
            t, seq = m["topic"], m["seq"]
            assert seq <= self.pos[t]["seq"] + 1, ("gap", t, self.pos[t], seq)
            if seq <= self.pos[t]["seq"]:
                return
            self.pos[t] = {**self.pos[t], "seq": seq}
            if m["type"] == "UPDATE":
                self.state[t].update({e["id"]: e for e in m["data"]})
            else:
                self.alerts.add((t, seq))

    def cut_and_reconnect(self, k: int) -> None:
        self.read(k)  # it got k more frames before the link broke
        self.pending = []
        self.hub.disconnect(self.session)
        self.session = self._open({t: Position(p["seq"], p["epoch"]) for t, p in self.pos.items()})


@settings(max_examples=200, deadline=None)
@given(
    ops=_OPS, size=st.sampled_from([0, 2, 5, 50]), max_replay=st.sampled_from([0, 1, 3, 100]), remote=st.booleans()
)
def test_property_no_silent_loss_whatever_the_cuts(ops: list, size: int, max_replay: int, remote: bool) -> None:
    hub = make_hub(history_size=size, max_replay=max_replay)
    store = Store(hub)
    if remote:
        hub.history_reader = store
    clients = [CoreClient(hub, f"c{i}") for i in range(3)]
    alerts: set[tuple[str, int]] = set()
    for i, op in enumerate(ops):
        if op[0] == "publish":
            _, topic, alert = op
            if alert:
                alerts.add((topic, hub.publish(publish.alert(topic, {"i": i}), at(1)).seq))
            else:
                hub.publish(update(topic, {"id": f"e{i % 4}", "i": i}), at(1))
            store.record()
        elif op[0] == "read":
            clients[op[1]].read(op[2])
        elif op[0] == "cut":
            clients[op[1]].cut_and_reconnect(op[2])
        else:
            store.complete(op[1])
    while store.pending:
        store.complete(True)
    for c in clients:
        c.read()
        for t in ("weather", "accidents"):
            state = hub.topics.topics[t]
            assert c.pos[t] == {"seq": state.seq, "epoch": state.epoch}
            assert c.state[t] == {k: dict(v) for k, v in hub.topics.state_of(t).items()}
            owed = {a for a in alerts if a[0] == t and a[1] > c.first[t]}
            assert owed <= c.alerts or t in c.lost
