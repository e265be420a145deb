"""Every client-driven cost is bounded (issue 12, items 9-12), decided by the sans-IO hub.

Pings and pongs take tokens from the rate limit and their pongs wait one at a time; the
slow-consumer policy costs O(1) per frame; fragments are gathered in one bounded buffer and
counted against the rate; requested SNAPSHOTs have a byte budget and count toward the byte
bound; one client's snapshot requests cannot evict every client's cached SNAPSHOT frames.
"""

from __future__ import annotations

import itertools
import json
import time

from tests.core.helpers import TOPICS, at, big, connected, decode_one, drain, drain_frames, make_hub, send, text_json, types, update
from uipd.core import wire
from uipd.core.hub import Hub, Session
from uipd.core.outbound import CloseRequest, Delivery

OP_PONG = 0xA


def pong_frame(payload: bytes) -> bytes:
    return bytes((0x80 | OP_PONG, len(payload))) + payload


def pongs(session: Session) -> list[bytes]:
    out = []
    for frame in drain_frames(session):
        opcode, payload = decode_one(frame)
        if opcode == OP_PONG:
            out.append(payload)
    return out


# -- item 10: pings and pongs ----------------------------------------------------------------------


def test_pings_take_tokens_and_a_flood_is_closed_1008() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=3, rate_limit_strikes=2)
    s = connected(hub, "c1")
    other = connected(hub, "c2")
    for i in range(3):
        hub.ping(s, pong_frame(b"%d" % i), 1.0)
    assert pongs(s) == [b"2"]  # three within the burst: only the latest one's pong waited
    hub.ping(s, pong_frame(b"x"), 1.0)
    hub.ping(s, pong_frame(b"y"), 1.0)
    assert drain_frames(s) == []  # over the limit: not answered (no ERROR for a control frame)
    assert s.outbound.closing is None
    hub.ping(s, pong_frame(b"z"), 1.0)
    assert s.outbound.closing == CloseRequest(1008, "rate limit exceeded", True)
    assert hub.counters.rate_limit_closes == 1
    hub.ping(other, pong_frame(b"ok"), 1.0)
    assert pongs(other) == [b"ok"]


def test_pings_share_the_bucket_with_messages() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=2, rate_limit_strikes=5)
    s = connected(hub, "c1")
    hub.ping(s, pong_frame(b"a"), 1.0)
    hub.ping(s, pong_frame(b"b"), 1.0)
    assert pongs(s) == [b"b"]
    assert types(send(hub, s, {"action": "ping"}, t=1.0)) == ["ERROR"]


def test_unsolicited_pongs_take_tokens_and_a_flood_is_closed_1008() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=3, rate_limit_strikes=2)
    s = connected(hub, "c1")
    for t in (1.0, 1.0, 1.0):
        hub.pong(s, t)
    assert s.last_alive == 1.0
    hub.pong(s, 1.5)
    hub.pong(s, 1.6)
    assert s.last_alive == 1.0  # over the limit: not a sign of life
    assert s.outbound.closing is None
    hub.pong(s, 1.7)
    assert s.outbound.closing == CloseRequest(1008, "rate limit exceeded", True)


def test_ping_flood_at_a_stuck_client_keeps_one_pong_and_stays_linear() -> None:
    """Today 32k pongs to a client past its bound took 166 s (every one rebuilt the queue)."""
    hub = make_hub(rate_limit=0.0, max_queue_bytes=64 * 1024)
    s = connected(hub, "stuck")
    for i in range(200):
        hub.publish(update("cameras", big(i)), at(1))
    s.outbound.take()  # the writer took a batch and the client never reads it
    t0 = time.perf_counter()
    for i in range(100_000):
        hub.ping(s, pong_frame(b"%d" % i), 2.0)
    assert time.perf_counter() - t0 < 2.0
    assert len(s.outbound) <= 1 and s.outbound.queued_bytes <= 10


def test_replies_past_the_bound_cost_o1_each() -> None:
    """Replies to a slow consumer past its bound: the resync starts once, never per reply."""
    hub = make_hub(rate_limit=0.0, max_queue_bytes=1024 * 1024)
    s = connected(hub, "slow")
    i = 0
    while s.outbound.queued_bytes + 1000 < 1024 * 1024:
        i += 1
        hub.publish(update("cameras", big(i)), at(1))
    s.outbound.take()  # the writer took ~1 MB and the client never reads it: every reply overflows
    frame = wire.pong_frame(at(1).iso)
    t0 = time.perf_counter()
    for _ in range(15_000):  # today: 15000 passes over a queue growing to 15000 frames
        hub.reply(s, frame)
    assert time.perf_counter() - t0 < 1.0
    assert len(s.outbound) == 15_000 and s.outbound.closing is None
    assert hub.counters.resyncs == 1


# -- item 11: fragments ----------------------------------------------------------------------------


def pieces(hub: Hub, s: Session, parts: list[str], t: float = 1.0) -> None:
    """Send ``parts`` as the frames of one message."""
    for i, part in enumerate(parts):
        hub.receive_piece(s, part, True, i == len(parts) - 1, at(t))


def test_fragmented_message_handled_once_whole() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    pieces(hub, s, ['{"action"', "", ':"ping"', "}"])
    assert types(drain(s)) == ["PONG"]
    assert s.assembly is None  # nothing held between messages
    # A frame arriving in parts (not fragments) is one message too.
    hub.receive_piece(s, '{"action":', False, False, at(1))
    hub.receive_piece(s, '"ping"}', True, True, at(1))
    assert types(drain(s)) == ["PONG"]


def test_endless_empty_continuations_closed_1009() -> None:
    hub = make_hub(max_fragments=128)
    s = connected(hub, "c1")
    hub.receive_piece(s, "{", True, False, at(1))
    for _ in range(126):
        hub.receive_piece(s, "", True, False, at(1))
    assert s.outbound.closing is None
    hub.receive_piece(s, "", True, False, at(1))  # the 128th frame, and not the last
    assert s.outbound.closing == CloseRequest(1009, "message in too many fragments", False)
    assert s.assembly is None


def test_fragment_bytes_counted_as_utf8() -> None:
    """Today 16,383 one-emoji fragments (65,532 bytes) held 1.7 MB of Python strings."""
    hub = make_hub(max_message_bytes=64 * 1024, max_fragments=20_000, rate_limit=0.0)
    s = connected(hub, "c1")
    for _ in range(16_383):
        hub.receive_piece(s, "\U0001f600", True, False, at(1))
    assert s.assembly is not None and s.assembly.held_bytes == 65_532
    hub.receive_piece(s, "abcde", True, False, at(1))  # 65,537 bytes
    assert s.outbound.closing == CloseRequest(1009, "message too big", False)


def test_single_frame_over_max_message_bytes_closed_1009() -> None:
    hub = make_hub(max_message_bytes=10)
    s = connected(hub, "c1")
    hub.receive_piece(s, "\u00e9" * 6, True, True, at(1))
    assert s.outbound.closing == CloseRequest(1009, "message too big", False)


def test_each_fragment_takes_a_token() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=3, rate_limit_strikes=2)
    s = connected(hub, "c1")
    hub.receive_piece(s, "{", True, False, at(1))
    hub.receive_piece(s, "", True, False, at(1))
    hub.receive_piece(s, "", True, False, at(1))
    assert drain(s) == []
    hub.receive_piece(s, "", True, False, at(1))
    hub.receive_piece(s, "", True, False, at(1))
    assert [m["error"]["code"] for m in drain(s)] == ["rate_limited", "rate_limited"]
    hub.receive_piece(s, "", True, False, at(1))
    assert s.outbound.closing == CloseRequest(1008, "rate limit exceeded", True)


def test_closing_connection_ignores_pieces() -> None:
    hub = make_hub()
    s = connected(hub, "c1")
    s.outbound.request_close(1001, "going away", flush=True)
    pieces(hub, s, ['{"action":', '"ping"}'])
    assert drain(s) == [] and s.assembly is None


# -- item 12: snapshot budget and the byte bound ---------------------------------------------------


def city(hub: Hub, entities: int = 100, size: int = 1000) -> None:
    hub.publish(update("cameras", *({"id": i, "blob": "x" * size} for i in range(entities))), at(0))


def ask(hub: Hub, s: Session, t: float, topics: list[str] | None = None) -> list[str]:
    msg: dict = {"action": "snapshot"} if topics is None else {"action": "snapshot", "topics": topics}
    got = send(hub, s, msg, t)
    return [m["type"] if m["type"] != "ERROR" else m["error"]["code"] for m in got]


def test_snapshot_requests_have_a_byte_budget() -> None:
    hub = make_hub(snapshot_budget_bytes=10_000.0, snapshot_burst_bytes=250_000.0)
    city(hub)  # ~110 KB
    s = connected(hub, "c1")
    other = connected(hub, "c2")
    assert ask(hub, s, 1.0, ["all"]) == ["SNAPSHOT"]
    assert ask(hub, s, 1.0, ["all"]) == ["SNAPSHOT"]
    assert ask(hub, s, 1.0, ["all"]) == ["rate_limited"]
    assert s.outbound.closing is None
    assert ask(hub, s, 1.0, ["weather"]) == ["SNAPSHOT"]  # what is left still buys a small one
    assert ask(hub, other, 1.0, ["all"]) == ["SNAPSHOT"]  # per client
    assert ask(hub, s, 8.0, ["all"]) == ["SNAPSHOT"]  # refilled at 10 KB/s
    # Subscribing with a snapshot spends the same budget.
    got = send(hub, s, {"action": "subscribe", "topics": ["cameras"], "snapshot": True}, 8.0)
    assert types(got) == ["SUBSCRIBED", "SNAPSHOT"] and got[1]["data"] == {}  # nothing added: costs nothing
    send(hub, s, {"action": "unsubscribe", "topics": ["cameras"]}, 8.0)
    got = send(hub, s, {"action": "subscribe", "topics": ["cameras"], "snapshot": True}, 8.0)
    assert [m["type"] for m in got] == ["SUBSCRIBED", "ERROR"] and got[1]["error"]["code"] == "rate_limited"


def test_snapshot_larger_than_the_burst_served_when_full_then_in_debt() -> None:
    hub = make_hub(snapshot_budget_bytes=10_000.0, snapshot_burst_bytes=50_000.0)
    city(hub)  # ~110 KB: more than the burst
    s = connected(hub, "c1")
    assert ask(hub, s, 1.0, ["cameras"]) == ["SNAPSHOT"]
    assert ask(hub, s, 6.0, ["cameras"]) == ["rate_limited"]  # 50 KB back of the 60 KB debt + 50 KB
    assert ask(hub, s, 17.0, ["cameras"]) == ["SNAPSHOT"]


def test_connect_and_resync_snapshots_are_never_refused() -> None:
    hub = make_hub(snapshot_budget_bytes=1.0, snapshot_burst_bytes=1.0, max_queue_bytes=5000)
    city(hub)
    s = hub.connect("c1", at(1))
    assert types(drain(s)) == ["connection", "SNAPSHOT"]  # 110 KB into a 5000-byte bound
    assert ask(hub, s, 1.0) == ["SNAPSHOT"]  # the bucket was full: one, in debt
    assert ask(hub, s, 1.0) == ["rate_limited"]
    for i in range(20):
        hub.publish(update("weather", big(i)), at(2))
    assert s.outbound.resync_pending
    drain(s)
    assert hub.take_resync(s, at(3))
    assert drain(s)[0]["resync"] is True


def test_snapshot_in_flight_counts_toward_the_bound_without_resyncing_a_reader() -> None:
    hub = make_hub(max_queue_bytes=5000, snapshot_budget_bytes=0.0)
    city(hub)
    s = hub.connect("c1", at(1))
    s.outbound.take()  # the connect SNAPSHOT (110 KB) is being written
    assert s.outbound.pending_bytes > 100_000  # counted honestly
    for i in range(5):
        hub.publish(update("weather", {"id": i, "v": "y" * 500}), at(1))
    assert not s.outbound.resync_pending and len(s.outbound) == 5
    # A second SNAPSHOT does not fit in the bound while the first is on its way: refused, not a close.
    got = send(hub, s, {"action": "snapshot"}, 1.0)  # drains: the connect batch is now written
    assert [m["type"] for m in got] == ["UPDATE"] * 5 + ["ERROR"] and got[-1]["error"]["code"] == "rate_limited"
    assert s.outbound.closing is None
    assert ask(hub, s, 1.0) == ["SNAPSHOT"]


def test_snapshot_request_past_the_bound_by_one_small_snapshot() -> None:
    hub = make_hub(max_queue_bytes=5000, snapshot_budget_bytes=0.0)
    s = connected(hub, "c1")
    hub.receive(s, '{"action":"snapshot","topics":["weather"]}', at(1))
    hub.receive(s, '{"action":"snapshot","topics":["weather"]}', at(1))  # small: fits in the bound
    assert types(drain(s)) == ["SNAPSHOT", "SNAPSHOT"]


# -- item 9: the snapshot cache --------------------------------------------------------------------


def connect_snapshot(hub: Hub, client_id: str, t: float) -> bytes:
    frames = drain_frames(hub.connect(client_id, at(t)))
    assert text_json(frames[1])["type"] == "SNAPSHOT"
    return frames[1]


def test_requested_sets_never_evict_the_connect_sets() -> None:
    hub = make_hub(snapshot_budget_bytes=0.0, rate_limit=0.0)
    city(hub)
    first = connect_snapshot(hub, "c1", 0.0)
    attacker = connected(hub, "attacker", 0.0)
    sets = [list(c) for n in range(1, len(TOPICS)) for c in itertools.combinations(TOPICS, n)]
    assert len(sets) > 40
    for names in sets:  # more distinct sets than the cache holds
        hub.receive(attacker, json.dumps({"action": "snapshot", "topics": names}), at(0.5))
        drain(attacker)
    assert connect_snapshot(hub, "c2", 0.9) is first  # still cached: not rebuilt
    # A requested set is cached too, for the next client asking for it.
    hub.receive(attacker, '{"action":"snapshot","topics":["all"]}', at(0.9))
    assert drain_frames(attacker)[0] is first
    a = hub.topics.snapshot_frame(["cameras", "weather"], 0.95, at(0.95).iso, requested=True)
    assert hub.topics.snapshot_frame(["cameras", "weather"], 0.95, at(0.95).iso, requested=True) is a


def test_cache_holds_only_frames_that_can_still_be_served() -> None:
    hub = make_hub(snapshot_budget_bytes=0.0, rate_limit=0.0)
    city(hub)
    table = hub.topics
    table.max_requested_sets = 2
    for i, names in enumerate((["cameras"], ["weather"], ["accidents"])):
        table.snapshot_frame(names, i * 0.1, "T", requested=True)
    assert [k for k, _ in table._requested] == [("weather",), ("accidents",)]  # bounded: least recently used out
    table.snapshot_frame(["patterns"], 5.0, "T", requested=True)
    assert [k for k, _ in table._requested] == [("patterns",)]  # expired frames dropped first
    hub.publish(update("weather", {"id": "w"}), at(10))
    fresh = table.snapshot_frame(TOPICS, 10.0, "T")
    assert len(table._requested) == 0 and len(table._cache) == 1  # the stale frames dropped at once
    assert table.snapshot_frame(TOPICS, 10.5, "T", requested=True) is fresh


def test_queue_kind_pong_is_a_control_frame() -> None:
    hub = make_hub(max_queue_bytes=100, slow_consumer="resync")
    s = connected(hub, "c1")
    hub.reply(s, b"x" * 100)
    s.outbound.take()  # in flight
    hub.reply(s, pong_frame(b"p"), Delivery.PONG)  # past the bound: a reply is never dropped silently
    assert s.outbound.resync_pending and s.outbound.closing is None
    hub.reply(s, pong_frame(b"q"), Delivery.PONG)
    assert pongs(s) == [b"q"]
