"""Property tests of the sans-IO core (PROTOCOL.md sections 2-5), against a model kept here.

A hypothesis state machine drives a real ``Hub`` the way the shell does: clients connect and
disconnect, send any text (valid requests, legacy ``type``/``channels`` spellings, unknown topics,
``all``, non-strings, broken JSON), sources publish UPDATEs (upserts and removals, colliding integer
and string ids), ALERTs and broadcasts, writers take and write queues (some writes left in flight),
heartbeats ping and drop, the clock moves.
After every step the hub must agree with the model: subscription sets, the routing index,
topic state and seq; every frame a client gets decodes as a protocol message, in the order the
model predicts, and a client that has caught up holds exactly the topics' current state.

Two configurations: a queue so large nothing overflows (every message is predicted exactly), and
a tiny queue under each slow-consumer policy (UPDATEs may be replaced by a resync SNAPSHOT, nothing
else may be lost unless the client is being closed 4008).
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

from tests.core.helpers import OP_PING, OP_TEXT, TOPICS, at, decode_frame
from uipd.core import publish
from uipd.core.closecodes import RATE_LIMITED, SLOW_CONSUMER
from uipd.core.hub import Hub, HubSettings, Session
from uipd.core.liveness import PING
from uipd.core.subscriptions import ALL
from uipd.core.topics import TopicTable

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SERVER_TYPES = {"connection", "SNAPSHOT", "UPDATE", "ALERT", "PONG", "SUBSCRIBED", "ERROR"}
MISSING = object()

# -- strategies for what clients send -------------------------------------------------------------

topic_name = st.one_of(
    st.sampled_from([*TOPICS, ALL]),
    st.sampled_from(["nope", "ALL", "Cameras", "", "cameras ", "all "]),
)
topic_item = st.one_of(
    topic_name,
    topic_name,
    topic_name,
    st.integers(-2, 2),
    st.none(),
    st.booleans(),
    st.lists(st.sampled_from(TOPICS), max_size=1),
)
topic_value = st.one_of(
    st.lists(topic_name, max_size=4),
    st.lists(topic_name, max_size=4),
    st.lists(topic_item, max_size=4),
    st.sampled_from(["cameras", "all", 0, None, True, {"cameras": 1}]),
)
action_value = st.one_of(
    st.sampled_from(["subscribe", "unsubscribe", "ping", "snapshot"]),
    st.sampled_from(["subscribe", "unsubscribe", "ping", "snapshot"]),
    st.sampled_from(["SUBSCRIBE", "Ping", "dance", "", "subscribe ", None, 7, True, ["ping"], {"a": 1}]),
)


@st.composite
def request_objects(draw: Any) -> dict[str, Any]:
    """A JSON object shaped like a client request, right or wrong in any part."""
    msg: dict[str, Any] = {}
    spelling = draw(st.sampled_from(["action", "action", "action", "type", "both", "none"]))
    if spelling in ("action", "both"):
        msg["action"] = draw(action_value)
    if spelling in ("type", "both"):
        msg["type"] = draw(action_value)
    topics_key = draw(st.sampled_from(["topics", "topics", "channels", "both", "none"]))
    if topics_key in ("topics", "both"):
        msg["topics"] = draw(topic_value)
    if topics_key in ("channels", "both"):
        msg["channels"] = draw(topic_value)
    flag = draw(st.sampled_from([MISSING, MISSING, True, False, 1, "true", None]))
    if flag is not MISSING:
        msg["snapshot"] = flag
    if draw(st.booleans()):
        msg[draw(st.sampled_from(["extra", "id", "ts"]))] = draw(st.integers() | st.text(max_size=3))
    return msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
@st.composite
def valid_requests(draw: Any) -> dict[str, Any]:
    """A well-formed request (sometimes in the legacy spelling, sometimes naming unknown topics)."""
    action = draw(st.sampled_from(["subscribe", "subscribe", "unsubscribe", "unsubscribe", "snapshot", "ping"]))
    names = st.sampled_from([*TOPICS, ALL]) | st.sampled_from(["nope"]) if draw(st.integers(0, 9)) == 0 else st.sampled_from([*TOPICS, ALL, *TOPICS[:3]])
    msg: dict[str, Any] = {"type" if draw(st.integers(0, 4)) == 0 else "action": action}
    if action != "ping":
        msg["channels" if draw(st.integers(0, 4)) == 0 else "topics"] = draw(st.lists(names, max_size=3))
    if action == "subscribe" and draw(st.booleans()):
        msg["snapshot"] = True
    return msg


client_texts = st.one_of(
    valid_requests().map(json.dumps),
    valid_requests().map(json.dumps),
    valid_requests().map(json.dumps),
    request_objects().map(json.dumps),
    request_objects().map(lambda m: json.dumps(m, ensure_ascii=False, indent=1)),
    json_values.map(json.dumps),
    st.text(max_size=40),
    st.sampled_from(["", " ", "{", "}", "null", "[]", "{}", '{"action":"ping"', '{"action":"ping"}}', "\x00", '{"action":"ping"}\n']),
)

# -- strategies for what sources publish ----------------------------------------------------------

entity_ids = st.sampled_from(["a", "b", "c", "7"]) | st.integers(6, 8)  # 7 and "7" are one entity
entities = st.lists(
    st.fixed_dictionaries({"id": entity_ids, "v": st.integers(0, 99) | st.text(max_size=4)}),
    max_size=4,
)
removed_ids = st.lists(entity_ids, max_size=3)
pub_topics = st.sampled_from(TOPICS)


# -- the model --------------------------------------------------------------------------------------


def decode(value_text: str) -> Any:
    try:
        return json.loads(value_text)
    except ValueError:
        return MISSING


def effective(names: set[str]) -> list[str]:
    return list(TOPICS) if ALL in names else [t for t in TOPICS if t in names]


def unsubscribe_results(names: set[str], request: list[str]) -> list[set[str]]:
    """What an unsubscribe may leave (PROTOCOL.md 3).  The request names a set of topics, so
    both readings of ["all", "cameras"] while holding all are accepted here: names handled in
    order (what uipd does today) and "all" removed first; see test_unsubscribe_is_order_independent."""
    in_order = set(names)
    for name in request:
        if name == ALL:
            in_order.discard(ALL)
            continue
        if ALL in in_order:
            in_order = set(TOPICS)
        in_order.discard(name)
    all_first = set(names)
    if ALL in request:
        all_first.discard(ALL)
    for name in request:
        if name != ALL and ALL in all_first:
            all_first = set(TOPICS)
        all_first.discard(name)
    return [in_order, all_first]


class Client:
    """The model of one session, and of what its client has received."""

    def __init__(self, mono: float) -> None:
        self.session: Session
        self.names: set[str] = {ALL}
        self.explicit = False
        self.last_alive = mono
        self.expected: list[dict[str, Any]] = []
        """Messages queued for it that it has not received yet, in order (pings as {"ping": payload})."""
        self.in_flight = False
        self.wire: list[bytes] = []
        self.view: dict[str, dict[str, Any]] = {}
        """What the client knows of each topic, from the SNAPSHOTs and UPDATEs it received."""
        self.last_seq: dict[str, int] = {}
        self.predicted_close: int | None = None
        self.allowed_unsub: list[set[str]] = []
        """The readings of its last unsubscribe accepted (see unsubscribe_results)."""
        self.known_subs: set[str] = {ALL}
        """The set as the client knows it: the default, then its last SUBSCRIBED."""


class HubMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.mono = 0.0
        self.n = 0
        self.state: dict[str, dict[str, Any]] = {t: {} for t in TOPICS}
        self.seq: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.live: dict[str, Client] = {}

    @initialize(mode=st.sampled_from(["exact", "exact", "resync", "resync", "disconnect"]))
    def setup(self, mode: str) -> None:
        self.exact = mode == "exact"
        settings_ = HubSettings(
            max_queue_bytes=1 << 30 if self.exact else 300,
            slow_consumer="disconnect" if mode == "disconnect" else "resync",
            rate_limit=0.0,
            snapshot_budget_bytes=0.0,  # the budget is timing, tested in tests/core/test_hub.py
        )
        self.hub = Hub(TopicTable.of(TOPICS), settings_, rng=random.Random(7))

    @property
    def now(self):
        return at(self.mono)

    # -- connections ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.live) < 6)
    @rule(target=clients)
    def connect(self) -> Client:
        self.n += 1
        client = Client(self.mono)
        session = client.session = self.hub.connect(f"c{self.n}", self.now)
        client.expected = [
            {"type": "connection", "message": self.hub.settings.welcome, "heartbeatInterval": 10000, "clientId": session.id, "topics": TOPICS},
            {"type": "SNAPSHOT", "data": self.sections(TOPICS)},
        ]
        self.live[session.id] = client
        return client

    @rule(client=consumes(clients))
    def disconnect(self, client: Client) -> None:
        if client.session.id in self.live:
            self.hub.disconnect(client.session)
            del self.live[client.session.id]

    # -- client messages ------------------------------------------------------------------------

    @rule(client=clients, text=client_texts)
    def receive(self, client: Client, text: str) -> None:
        if client.session.id not in self.live or client.session.outbound.closing is not None:
            return  # the shell stops reading a closing connection
        snapshot_held = client.session.outbound.snapshot_bytes > 0
        replies = self.expect_replies(client, decode(text))
        self.hub.receive(client.session, text, self.now)  # must never raise
        event("reply: " + ",".join(r["type"] + ("/" + r["code"] if "code" in r else "") for r in replies))
        if snapshot_held and not self.exact:
            for r in replies:
                if r["type"] == "SNAPSHOT":
                    r["_or_refused"] = True  # a second SNAPSHOT must fit in the byte bound: else ERROR rate_limited
        client.expected.extend(replies)

    def expect_replies(self, client: Client, msg: Any) -> list[dict[str, Any]]:
        """The replies PROTOCOL.md section 2/3/5 prescribe, applying the change to the model."""

        def error(code: str, topics: list[str] | None = None) -> list[dict[str, Any]]:
            e: dict[str, Any] = {"type": "ERROR", "code": code}
            if topics:
                e["topics"] = topics
            return [e]

        if not isinstance(msg, dict):
            return error("bad_request")
        action = msg["action"] if "action" in msg else msg.get("type")
        if action is None or not isinstance(action, str):
            return error("bad_request")
        if action == "ping":
            client.last_alive = self.mono
            return [{"type": "PONG"}]
        if action not in ("subscribe", "unsubscribe", "snapshot"):
            return error("unknown_action")
        topics = msg["topics"] if "topics" in msg else msg.get("channels")
        if topics is None and action == "snapshot":
            return [{"type": "SNAPSHOT", "data": self.sections(effective(client.names))}]
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            return error("bad_request")
        unknown = [t for t in topics if t != ALL and t not in TOPICS]
        if unknown:
            return error("unknown_topic", unknown)
        if action == "snapshot":
            wanted = set(topics)
            return [{"type": "SNAPSHOT", "data": self.sections([t for t in TOPICS if ALL in wanted or t in wanted])}]
        before = effective(client.names)
        if action == "subscribe":
            if not client.explicit:
                client.names, client.explicit = set(), True
            client.names |= set(topics)
            out: list[dict[str, Any]] = [{"type": "SUBSCRIBED", "topics": sorted(client.names)}]
            if msg.get("snapshot") is True:
                added = [t for t in effective(client.names) if t not in before]
                out.append({"type": "SNAPSHOT", "data": self.sections(added)})
            return out
        client.explicit = True
        allowed = unsubscribe_results(client.names, topics)
        client.names = allowed[0]  # settled by the invariant to the reading the hub took
        client.allowed_unsub = allowed
        return [{"type": "SUBSCRIBED", "topics": None, "_allowed": [sorted(a) for a in allowed]}]

    def sections(self, names: list[str]) -> dict[str, list[Any]]:
        return {t: list(self.state[t].values()) for t in names}

    # -- publishing -----------------------------------------------------------------------------

    def recipients_of(self, topic: str | None, broadcast: bool) -> list[Client]:
        if broadcast:
            return list(self.live.values())
        return [c for c in self.live.values() if ALL in c.names or topic in c.names]

    def before_publish(self) -> dict[str, tuple[int, bool, int]]:
        return {cid: (len(c.session.outbound), c.session.outbound.resync_pending, len(c.wire)) for cid, c in self.live.items()}

    def after_publish(self, message: dict[str, Any], targets: list[Client], result: Any, before: dict[str, tuple[int, bool, int]]) -> None:
        target_ids = {c.session.id for c in targets}
        for cid, c in self.live.items():
            length, resync, wired = before[cid]
            now_ = (len(c.session.outbound), c.session.outbound.resync_pending, len(c.wire))
            if cid not in target_ids:
                # Not subscribed: untouched (PROTOCOL.md 4, "reach exactly the clients whose set holds t or all").
                assert now_ == (length, resync, wired), f"{cid} is not subscribed but its queue changed"
                continue
            if c.session.outbound.closing is None:
                c.expected.append(message)
                if self.exact:
                    assert now_[0] + now_[2] == length + wired + 1, f"{cid} is subscribed and did not get the message"
        if self.exact:
            assert result.recipients == sum(1 for c in targets if c.session.outbound.closing is None)
        else:
            assert result.recipients <= len(targets)

    @rule(topic=pub_topics, data=entities, removed=removed_ids, broadcast=st.booleans())
    def publish_update(self, topic: str, data: list[dict[str, Any]], removed: list[Any], broadcast: bool) -> None:
        before = self.before_publish()
        targets = self.recipients_of(topic, broadcast)
        result = self.hub.publish(publish.update(topic, data, removed, broadcast=broadcast), self.now)
        for e in data:
            self.state[topic][str(e["id"])] = e
        for r in removed:
            self.state[topic].pop(str(r), None)
        self.seq[topic] += 1
        assert result.seq == self.seq[topic]
        message: dict[str, Any] = {"type": "UPDATE", "topic": topic, "data": data, "seq": self.seq[topic]}
        if removed:
            message["removed"] = [str(r) for r in removed]
        self.after_publish(message, targets, result, before)

    @rule(topic=pub_topics | st.none(), data=json_values, broadcast=st.booleans())
    def publish_alert(self, topic: str | None, data: Any, broadcast: bool) -> None:
        if topic is None:
            broadcast = True  # only a broadcast may belong to no topic
        before = self.before_publish()
        targets = self.recipients_of(topic, broadcast)
        result = self.hub.publish(publish.alert(topic, data, broadcast=broadcast), self.now)
        message: dict[str, Any] = {"type": "ALERT", "data": data}
        if topic is not None:
            self.seq[topic] += 1
            assert result.seq == self.seq[topic]
            message.update(topic=topic, seq=self.seq[topic])
        else:
            assert result.seq is None
        self.after_publish(message, targets, result, before)

    @rule(data=entities)
    def broadcast_topicless_update(self, data: list[dict[str, Any]]) -> None:
        before = self.before_publish()
        targets = self.recipients_of(None, True)
        result = self.hub.publish(publish.update(None, data, broadcast=True), self.now)
        assert result.seq is None
        self.after_publish({"type": "UPDATE", "data": data}, targets, result, before)

    # -- the writer -----------------------------------------------------------------------------

    @rule(client=clients)
    def take_only(self, client: Client) -> None:
        """The writer took the queue and its write is still in flight."""
        if client.session.id in self.live and not client.in_flight:
            client.wire.extend(client.session.outbound.take())
            client.in_flight = True

    @rule(client=clients)
    def write_done(self, client: Client) -> None:
        if client.in_flight:
            client.session.outbound.written()
            client.in_flight = False

    @rule(client=clients)
    def drain(self, client: Client) -> None:
        """Write until the queue is empty and no resync is owed, then read what arrived."""
        if client.session.id not in self.live:
            return
        queue = client.session.outbound
        for _ in range(10):
            client.wire.extend(queue.take())
            queue.written()
            client.in_flight = False
            resync_expected = {"type": "SNAPSHOT", "data": self.sections(effective(client.names)), "resync": True}
            if self.hub.take_resync(client.session, self.now):
                assert not self.exact, "a resync in a queue that cannot overflow"
                event("resync SNAPSHOT taken")
                client.expected.append(resync_expected)
                continue
            if not len(queue):
                break
        self.read(client)
        event(f"drain: {'closing' if queue.closing else 'open'}; view of {len(client.view)} topics")
        if queue.closing is not None:
            # A closing connection: the shell sends the close frame and then drops it.
            assert queue.closing.code in (SLOW_CONSUMER.code, RATE_LIMITED.code)
            if self.exact:
                assert queue.closing.code == client.predicted_close
            if queue.closing.flush is False:
                self.hub.disconnect(client.session)  # the shell drops it after its close frame
                del self.live[client.session.id]
                return
        else:
            assert client.predicted_close is None, "predicted a close that did not happen"
            assert not queue.resync_pending
            # Caught up: the client's view of every topic it follows is the current state.
            for topic in effective(client.names):
                if topic in client.view:
                    assert client.view[topic] == self.state[topic], f"{client.session.id} has a stale {topic}"
            leftover = [e for e in client.expected if e.get("type") != "UPDATE"]
            assert not leftover, f"never delivered: {leftover}"
            if self.exact:
                assert not client.expected, f"never delivered: {client.expected}"
            client.expected.clear()  # the UPDATEs left were superseded by the resync

    def read(self, client: Client) -> None:
        closing = client.session.outbound.closing
        may_skip_anything = closing is not None and not closing.flush
        for frame in client.wire:
            msg = self.decode_server_frame(frame)
            while True:
                assert client.expected, f"{client.session.id} got an unexpected message {msg}"
                want = client.expected.pop(0)
                if self.matches(client, msg, want):
                    break
                # Only an UPDATE may be left out (superseded by a resync), unless the client is
                # being closed as a slow consumer.
                assert may_skip_anything or (not self.exact and want.get("type") == "UPDATE"), (
                    f"{client.session.id}: expected {want}, got {msg}"
                )
            self.apply_to_view(client, msg)
        client.wire.clear()

    def decode_server_frame(self, frame: bytes) -> dict[str, Any]:
        opcode, payload, end = decode_frame(frame)
        assert end == len(frame)
        if opcode == OP_PING:
            return {"ping": payload}
        assert opcode == OP_TEXT
        msg = json.loads(payload.decode("utf-8"))
        assert isinstance(msg, dict) and msg.get("type") in SERVER_TYPES, msg
        assert ISO.match(msg["timestamp"]), msg
        if msg["type"] == "ERROR":
            assert isinstance(msg["error"]["code"], str) and msg["error"]["message"], msg
        return msg

    def matches(self, client: Client, msg: dict[str, Any], want: dict[str, Any]) -> bool:
        if "ping" in want or "ping" in msg:
            return msg == want
        if want.get("_or_refused") and msg["type"] == "ERROR":
            return msg["error"]["code"] == "rate_limited"
        if msg["type"] != want["type"]:
            return False
        if want["type"] == "ERROR":
            return msg["error"]["code"] == want["code"] and msg["error"].get("topics") == want.get("topics")
        if "_allowed" in want:
            return msg["topics"] in want["_allowed"]
        got = {k: v for k, v in msg.items() if k != "timestamp"}
        if msg["type"] == "SNAPSHOT":
            # one position per section (PROTOCOL.md section 8); its seq is checked by the recovery tests
            positions = got.pop("positions")
            assert set(positions) == set(msg["data"]), f"positions {positions} for sections {list(msg['data'])}"
        exp = {k: v for k, v in want.items() if not k.startswith("_")}
        return got == exp

    def apply_to_view(self, client: Client, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "SNAPSHOT":
            for topic, section in msg["data"].items():
                if topic in effective(client.known_subs):  # else it gets no UPDATEs to keep it current
                    client.view[topic] = {str(e["id"]): e for e in section}
        elif kind == "SUBSCRIBED":
            client.known_subs = set(msg["topics"])
            for topic in list(client.view):
                if topic not in effective(client.known_subs):
                    del client.view[topic]
        elif kind in ("UPDATE", "ALERT") and "topic" in msg:
            topic = msg["topic"]
            assert msg["seq"] > client.last_seq.get(topic, 0), "seq out of order"
            client.last_seq[topic] = msg["seq"]
            if kind == "UPDATE" and topic in client.view:
                for e in msg["data"]:
                    client.view[topic][str(e["id"])] = e
                for r in msg.get("removed", ()):
                    client.view[topic].pop(r, None)

    # -- liveness -------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.0, 0.001, 0.5, 3.0, 9.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.mono += dt

    @rule(client=clients)
    def pong(self, client: Client) -> None:
        if client.session.id in self.live:
            self.hub.pong(client.session, self.mono)
            client.last_alive = self.mono

    @rule()
    def heartbeat(self) -> None:
        due = {cid: c.session.next_ping_at <= self.mono for cid, c in self.live.items()}
        queued = {cid: len(c.session.outbound) for cid, c in self.live.items()}
        plan = self.hub.heartbeat(self.now)
        timeout = self.hub.settings.heartbeat_timeout
        open_ = [c for c in self.live.values() if c.session.outbound.closing is None]
        assert {s.id for s in plan.dead} == {c.session.id for c in open_ if self.mono - c.last_alive > timeout}
        # A pass queues nothing but pings: a session whose queue grew was pinged.
        pinged = {cid for cid, c in self.live.items() if len(c.session.outbound) > queued[cid]}
        should = {c.session.id for c in open_ if due[c.session.id] and self.mono - c.last_alive <= timeout}
        assert pinged <= should
        if self.exact:
            assert pinged == {cid for cid in should if self.live[cid].predicted_close is None}
        for cid in pinged:
            self.live[cid].expected.append({"ping": decode_frame(PING)[1]})
        for session in plan.dead:  # the shell drops them
            self.hub.disconnect(session)
            del self.live[session.id]

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def sessions_and_index_agree(self) -> None:
        if not hasattr(self, "hub"):
            return
        hub = self.hub
        assert set(hub.sessions) == set(self.live)
        everyone = set(hub.sessions.values())
        all_subs = hub.index.all_topics
        assert all_subs <= everyone, "a disconnected session is still routed to"
        for topic, subscribers in hub.index.by_topic.items():
            assert subscribers <= everyone, "a disconnected session is still routed to"
            for s in subscribers:
                assert topic in s.subscriptions.names and not s.subscriptions.wants_all
        for cid, c in self.live.items():
            s = c.session
            if c.allowed_unsub:
                assert s.subscriptions.names in c.allowed_unsub, (cid, s.subscriptions.names, c.allowed_unsub)
                c.names, c.allowed_unsub = set(s.subscriptions.names), []
            assert s.subscriptions.names == c.names, (cid, s.subscriptions.names, c.names)
            assert (s in all_subs) == (ALL in s.subscriptions.names)
            for topic in TOPICS:
                routed = s in all_subs or s in hub.index.by_topic[topic]
                assert routed == (ALL in c.names or topic in c.names), (cid, topic)
                assert not (s in all_subs and s in hub.index.by_topic[topic]), "routed twice"

    @invariant()
    def topic_state_and_seq(self) -> None:
        if not hasattr(self, "hub"):
            return
        for topic in TOPICS:
            state = self.hub.topics.get(topic)
            assert dict(state.entities) == self.state[topic]
            assert list(state.entities) == list(self.state[topic]), "first-seen order"
            assert state.seq == self.seq[topic]
        stats = self.hub.stats()
        assert stats["clients"] == len(self.live)
        for topic in TOPICS:
            assert stats["topics"][topic]["subscribers"] == len(self.recipients_of(topic, False))
            assert stats["topics"][topic]["seq"] == self.seq[topic]


HubMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("UIPD_FUZZ_EXAMPLES", "300")),
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHubMachine = HubMachine.TestCase


# -- focused properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=client_texts)
def test_any_text_gets_protocol_replies_and_never_raises(text: str) -> None:
    hub = Hub(TopicTable.of(TOPICS), HubSettings(rate_limit=0.0))
    session = hub.connect("c", at(0.0))
    session.outbound.take()
    session.outbound.written()
    hub.receive(session, text, at(1.0))
    frames = session.outbound.take()
    assert 1 <= len(frames) <= 2, "every message is answered (a subscribe with snapshot twice)"
    for frame in frames:
        opcode, payload, end = decode_frame(frame)
        assert opcode == OP_TEXT and end == len(frame)
        msg = json.loads(payload)
        assert msg["type"] in {"PONG", "SUBSCRIBED", "SNAPSHOT", "ERROR"}
        if msg["type"] == "ERROR":
            assert msg["error"]["code"] in {"bad_request", "unknown_action", "unknown_topic"}
    assert session.outbound.closing is None, "bad input never closes the connection"


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.01, 0.05, 0.2, 1.0]), min_size=1, max_size=80),
    rate=st.sampled_from([5.0, 20.0]),
    burst=st.sampled_from([1.0, 3.0, 10.0]),
    strikes=st.sampled_from([1, 3, 5]),
)
def test_rate_limit_is_a_token_bucket_then_a_close(gaps: list[float], rate: float, burst: float, strikes: int) -> None:
    """Accepted messages in any window [t_i, t_j] never exceed burst + rate * (t_j - t_i); a client
    is closed 1008 only after more than ``strikes`` consecutive limited messages, and never raises."""
    hub = Hub(TopicTable.of(TOPICS), HubSettings(rate_limit=rate, rate_burst=burst, rate_limit_strikes=strikes))
    session = hub.connect("c", at(0.0))
    session.outbound.take()
    session.outbound.written()
    t, accepted, consecutive_limited = 0.0, [], 0
    for gap in gaps:
        t += gap
        if session.outbound.closing is not None:
            break
        hub.receive(session, '{"action":"ping"}', at(t))
        frames = session.outbound.take()
        session.outbound.written()
        if session.outbound.closing is not None:
            assert not frames
            assert session.outbound.closing.code == RATE_LIMITED.code
            assert consecutive_limited == strikes, "closed before the strikes ran out"
            break
        (frame,) = frames
        msg = json.loads(decode_frame(frame)[1])
        if msg["type"] == "PONG":
            accepted.append(t)
            consecutive_limited = 0
        else:
            assert msg["error"]["code"] == "rate_limited"
            consecutive_limited += 1
            assert consecutive_limited <= strikes
    for i, start in enumerate(accepted):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= burst + rate * (accepted[j] - start) + 1e-6


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(held=st.sampled_from([[ALL], [ALL, "cameras"], ["weather", "cameras"]]), request=st.lists(st.sampled_from([ALL, "cameras", "weather"]), min_size=1, max_size=3, unique=True))
def test_unsubscribe_result_names_only_known_topics(held: list[str], request: list[str]) -> None:
    hub = Hub(TopicTable.of(TOPICS), HubSettings(rate_limit=0.0))
    session = hub.connect("c", at(0.0))
    hub.receive(session, json.dumps({"action": "subscribe", "topics": held}), at(0.0))
    hub.receive(session, json.dumps({"action": "unsubscribe", "topics": request}), at(0.0))
    names = session.subscriptions.names
    assert names <= {*TOPICS, ALL}
    for topic in request:
        if topic != ALL:
            assert topic not in effective(names), "an unsubscribed topic is still received"


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(held=st.sampled_from([[ALL], [ALL, "cameras"]]), request=st.lists(st.sampled_from([ALL, *TOPICS]), min_size=2, max_size=4, unique=True))
def test_unsubscribe_is_order_independent(held: list[str], request: list[str]) -> None:
    """PROTOCOL.md 3: an unsubscribe "removes the named topics" -- a set, so their order in the
    list cannot matter.  The same request, names reversed, must leave the same subscription set."""
    results = []
    for names in (request, request[::-1]):
        hub = Hub(TopicTable.of(TOPICS), HubSettings(rate_limit=0.0))
        session = hub.connect("c", at(0.0))
        hub.receive(session, json.dumps({"action": "subscribe", "topics": held}), at(0.0))
        hub.receive(session, json.dumps({"action": "unsubscribe", "topics": names}), at(0.0))
        results.append(effective(session.subscriptions.names))
    assert results[0] == results[1], f"unsubscribe {request} left {results[0]}, reversed left {results[1]}"
