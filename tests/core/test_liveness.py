"""Liveness (uipd.core.liveness): the heartbeat schedule, dead clients and credential expiry."""

from __future__ import annotations

import pytest

from tests.core.helpers import OP_PING, at, connected, decode_one, drain, drain_frames, make_hub, send
from uipd.core import liveness
from uipd.core.hub import Hub, Session
from uipd.core.outbound import CloseRequest


def pinged(hub: Hub, sessions: list[Session], t: float) -> list[str]:
    """Run one heartbeat pass at ``t``; the ids of the sessions it queued a ping for (drained)."""
    plan = hub.heartbeat(at(t))
    assert plan.failed == [] and plan.dead == []
    ids = []
    for s in sessions:
        frames = drain_frames(s)
        if frames:
            assert [decode_one(f) for f in frames] == [(OP_PING, b"")]
            ids.append(s.id)
    return ids


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
        for cid in pinged(hub, sessions, t):
            assert cid not in first_ping, "pinged twice within one interval"
            first_ping[cid] = t
        t = round(t + 0.5, 3)
    assert set(first_ping) == {s.id for s in sessions}
    assert len(set(first_ping.values())) > 5
    for s in sessions:
        assert s.next_ping_at == pytest.approx(first_ping[s.id] + 10.0)


def test_every_ping_is_the_one_frame_built_at_import() -> None:
    # Nothing matches a pong to its ping (any pong is a sign of life): no payload, no frame per ping.
    hub = make_hub(heartbeat_interval=1.0, heartbeat_timeout=30.0)
    a, b = connected(hub, "a"), connected(hub, "b")
    frames = []
    for t in (1.0, 2.0, 3.0):
        hub.heartbeat(at(t))
        frames += drain_frames(a) + drain_frames(b)
    assert len(frames) == 6 and all(f is liveness.PING for f in frames)
    assert decode_one(liveness.PING) == (OP_PING, b"")


def test_a_ping_that_does_not_fit_is_skipped_not_a_slow_consumer() -> None:
    hub = make_hub(heartbeat_interval=1.0, heartbeat_timeout=30.0, max_queue_bytes=100)
    s = connected(hub, "c1")
    hub.reply(s, b"x" * 100)
    hub.heartbeat(at(2.0))
    assert len(s.outbound) == 1 and not s.outbound.resync_pending and s.outbound.closing is None
    assert s.next_ping_at == pytest.approx(3.0)  # the next one is due an interval later


def test_silent_session_is_dead_after_timeout() -> None:
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=30.0)
    silent = connected(hub, "silent")
    pinger = connected(hub, "pinger")
    ponger = connected(hub, "ponger")
    send(hub, pinger, {"action": "ping"}, t=20)
    hub.pong(ponger, 25.0)
    assert hub.heartbeat(at(30.0)).dead == []
    drain(silent)
    plan = hub.heartbeat(at(30.5))
    assert plan.dead == [silent]
    assert len(silent.outbound) == 0  # a dead session is not pinged
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
    assert plan.dead == [] and len(s.outbound) == 0


def test_expired_credentials_are_closed_4001_after_what_is_queued() -> None:
    hub = make_hub(heartbeat_interval=100.0, heartbeat_timeout=300.0)
    s = hub.connect("c1", at(0), expires_in=5.0)
    keep = hub.connect("c2", at(0), expires_in=50.0)
    assert hub.heartbeat(at(4.9)).dead == [] and s.outbound.closing is None
    hub.heartbeat(at(5.0))
    assert s.outbound.closing == CloseRequest(4001, "token expired", True)
    assert [m["type"] for m in drain(s)] == ["connection", "SNAPSHOT"]  # flushed before the close
    assert keep.outbound.closing is None
    assert hub.counters.expired_closes == 1
    hub.heartbeat(at(6.0))
    assert hub.counters.expired_closes == 1  # a closing session is not closed again


class Exploding:
    def _boom(self, other: object) -> bool:
        raise RuntimeError("corrupt")

    __lt__ = __le__ = __gt__ = __ge__ = _boom


def test_the_heartbeat_fails_one_session_and_still_checks_the_others() -> None:
    hub = make_hub(heartbeat_interval=1.0, heartbeat_timeout=3.0)
    before = hub.connect("before", at(0))
    victim = hub.connect("victim", at(0))
    after = hub.connect("after", at(0))
    for s in (before, victim, after):
        drain(s)
    victim.expires_at = Exploding()  # type: ignore[assignment]
    plan = hub.heartbeat(at(2.0))
    assert [(s.id, type(e)) for s, e in plan.failed] == [("victim", RuntimeError)]
    assert [len(s.outbound) for s in (before, victim, after)] == [1, 0, 1]  # the others were pinged
    plan = hub.heartbeat(at(10.0))
    assert {s.id for s in plan.dead} == {"before", "after"} and [s.id for s, _ in plan.failed] == ["victim"]


# -- the schedule: a pass looks at the sessions due, not at all of them ---------------------------


def test_a_session_heard_from_is_pinged_an_interval_after_its_last_ping_never_earlier() -> None:
    # Its pongs move last_alive, so the deadline kept for "dead at last_alive + timeout" comes
    # early: that check must not turn into an early ping.
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=12.0)
    s = connected(hub, "c1")
    pings: list[float] = []
    t = 0.0
    while t <= 60.0:
        if pinged(hub, [s], t):
            pings.append(t)
            hub.pong(s, t + 0.1)
        t = round(t + 0.25, 3)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 5 and all(10.0 <= g <= 10.25 for g in gaps), pings


def test_a_silent_session_is_reported_dead_at_the_first_pass_past_its_timeout() -> None:
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=30.0)
    silent = connected(hub, "silent")
    alive = connected(hub, "alive")
    t, dead_at = 0.0, None
    while t <= 40.0 and dead_at is None:
        plan = hub.heartbeat(at(t))
        hub.pong(alive, t)
        if plan.dead:
            assert plan.dead == [silent]
            dead_at = t
        t = round(t + 0.5, 3)
    assert dead_at == 30.5  # silent since 0: more than 30 s at the first pass after 30.0
    # Until the shell drops it, every pass says so again; then it is forgotten.
    assert hub.heartbeat(at(31.0)).dead == [silent]
    hub.disconnect(silent)
    assert hub.heartbeat(at(31.5)).dead == []
    assert all(session is not silent for deadline, session in hub.heartbeats.entries() if deadline > 31.5)


def test_a_pass_costs_the_sessions_due_not_the_sessions_connected() -> None:
    hub = make_hub(heartbeat_interval=10.0, heartbeat_timeout=30.0)
    sessions = [hub.connect(f"c{i}", at(0)) for i in range(10_000)]
    for s in sessions:
        drain(s)
    schedule = hub.heartbeats
    per_pass = []
    for k in range(1, 41):  # 0.25 s ticks over one interval
        before = schedule.checked
        hub.heartbeat(at(k * 0.25))
        due = sum(1 for s in sessions if drain_frames(s))
        per_pass.append((schedule.checked - before, due))
    # Each check of a pass pinged its session: nothing else was looked at.
    assert all(checked == due for checked, due in per_pass), per_pass
    assert sum(due for _, due in per_pass) == 10_000
    assert max(checked for checked, _ in per_pass) < 600  # ~250 a tick, not 10,000
    # A pass with nothing due looks at nothing at all.
    before = schedule.checked
    hub.heartbeat(at(10.0))
    assert schedule.checked == before
    assert len(schedule) == 10_000  # one deadline per session


def test_expiry_is_a_deadline_of_its_own_not_a_check_of_every_pass() -> None:
    hub = make_hub(heartbeat_interval=100.0, heartbeat_timeout=300.0)
    s = hub.connect("c1", at(0), expires_in=5.0)
    drain(s)
    s.next_ping_at = 200.0  # nothing else due before the expiry
    hub.heartbeats.remove(s)
    hub.heartbeats.add(s, 300.0)
    before = hub.heartbeats.checked
    for t in (1.0, 2.0, 4.9):
        hub.heartbeat(at(t))
    assert hub.heartbeats.checked == before and s.outbound.closing is None
    hub.heartbeat(at(5.0))
    assert hub.heartbeats.checked == before + 1
    assert s.outbound.closing == CloseRequest(4001, "token expired", True)
