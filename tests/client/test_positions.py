"""The client rules of recovery (uipd.client.positions) on their own, the same cases as the browser
client's clients/js/test/positions.test.js: apply in seq order, drop duplicates, ask once per gap,
show an ALERT exactly once whether it came live past a gap, replayed or in missedAlerts, and the
reconnect URL (topics + since, and its fallback when too long)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from uipd.client.positions import Decision, Position, Positions, recovery_url


def update(topic: str, seq: int) -> dict[str, Any]:
    return {"type": "UPDATE", "topic": topic, "seq": seq, "data": []}


def alert(topic: str, seq: int) -> dict[str, Any]:
    return {"type": "ALERT", "topic": topic, "seq": seq, "data": {"n": seq}}


def snap(positions: dict[str, tuple[int, str]], **extra: Any) -> dict[str, Any]:
    return {"type": "SNAPSHOT", "data": {t: [] for t in positions},
            "positions": {t: {"seq": s, "epoch": e} for t, (s, e) in positions.items()}, **extra}


def test_applies_the_next_seq_ignores_duplicates_and_asks_once_per_gap() -> None:
    p = Positions()
    p.snapshot(snap({"a": (3, "E1"), "b": (0, "E1")}))
    assert p.get("a") == Position(3, "E1")
    assert p.message(update("a", 4)) == Decision(apply=True, emit=False, ask=False)
    assert p.message(update("a", 4)) == Decision(False, False, False), "a duplicate"
    assert p.message(update("a", 2)) == Decision(False, False, False), "older: a duplicate"
    assert p.message(update("a", 6)) == Decision(False, False, True), "a gap asks"
    assert p.since_of("a") == {"a": {"seq": 4, "epoch": "E1"}}, "since the last applied"
    assert p.message(update("a", 7)) == Decision(False, False, False), "one ask per topic"
    assert p.message(update("b", 3)).ask, "another topic asks on its own"
    answer = p.snapshot({"type": "SNAPSHOT", "data": {}, "recovered": ["a"]})
    assert (answer.alerts, answer.recovered, answer.alerts_lost) == ([], ["a"], [])
    assert all(p.message(update("a", seq)).apply for seq in (5, 6, 7))
    assert p.message(update("a", 9)).ask, "a new gap after the answer asks again"
    assert p.get("a") == Position(7, "E1")


def test_an_alert_past_a_gap_is_shown_at_once_and_never_again() -> None:
    p = Positions()
    p.snapshot(snap({"a": (1, "E")}))
    assert p.message(alert("a", 3)) == Decision(False, True, True)
    assert not p.message(alert("a", 3)).emit, "the same one again"
    p.snapshot({"type": "SNAPSHOT", "data": {}, "recovered": ["a"]})
    assert p.message(alert("a", 2)) == Decision(True, True, False)
    assert p.message(alert("a", 3)) == Decision(True, False, False), "replayed, shown already"
    assert p.message(alert("a", 4)).emit
    assert p.message(alert("a", 6)).emit
    answer = p.snapshot(snap({"a": (8, "E")}, missedAlerts={"a": [alert("a", 5), alert("a", 6)]}))
    assert [m["seq"] for m in answer.alerts] == [5]
    assert p.get("a") == Position(8, "E")


def test_new_epoch_alerts_lost_old_servers_and_resync() -> None:
    p = Positions()
    p.snapshot(snap({"a": (50, "OLD")}))
    assert p.snapshot(snap({"a": (2, "NEW")}, alertsLost=["a"])).alerts_lost == ["a"]
    assert p.message(update("a", 3)).apply, "numbered from the new epoch"
    p.snapshot({"type": "SNAPSHOT", "data": {"a": []}})  # a server before 1.1: no positions
    assert p.get("a") is None and p.message(update("a", 1)).apply
    p.snapshot(snap({"a": (10, "NEW")}, resync=True))
    assert p.message(update("a", 11)).apply


def test_a_plain_snapshot_in_a_new_epoch_reports_alerts_lost() -> None:
    """The recovery URL failed (the daemon was down), the plain connect's SNAPSHOT is in the new
    daemon's epoch, and the ask sent after it may be refused (rate_limited): the loss is still told."""
    p = Positions()
    assert p.snapshot(snap({"a": (5, "OLD"), "b": (1, "OLD")})).alerts_lost == [], "a first SNAPSHOT loses nothing"
    assert p.snapshot(snap({"a": (5, "OLD")}, resync=True)).alerts_lost == [], "the same epoch loses nothing"
    assert p.snapshot(snap({"a": (1, "NEW"), "b": (1, "OLD")})).alerts_lost == ["a"], "another daemon run"
    assert p.snapshot(snap({"b": (2, "NEW")}, alertsLost=["b"])).alerts_lost == ["b"], "said by the server: once"


def test_a_refused_ask_and_a_new_connection_ask_again_and_memory_is_bounded() -> None:
    p = Positions()
    p.snapshot(snap({"a": (1, "E")}))
    assert p.message(update("a", 3)).ask
    p.ask_failed(["a"])
    assert p.message(update("a", 4)).ask
    p.new_connection()
    assert p.message(update("a", 5)).ask
    p.retain(lambda t: t != "a")
    assert p.get("a") is None

    small = Positions(alert_memory=2)
    small.snapshot(snap({"a": (0, "E")}))
    assert all(small.message(alert("a", seq)).emit for seq in (2, 3, 4))
    answer = small.snapshot(snap({"a": (4, "E")}, missedAlerts={"a": [alert("a", 2), alert("a", 4)]}))
    assert [m["seq"] for m in answer.alerts] == [2], "2 was forgotten (the oldest), 4 is still known"


def test_recovery_url_and_its_fallback() -> None:
    since = {"cameras": {"seq": 41, "epoch": "aZ3kPq9x"}}
    url, later = recovery_url("ws://h:1/ws?token=t", ["cameras", "weather"], since)
    q = parse_qs(urlsplit(url).query)
    assert q["token"] == ["t"] and q["topics"] == ["cameras,weather"] and json.loads(q["since"][0]) == since
    assert later is None
    assert "topics" not in parse_qs(urlsplit(recovery_url("ws://h:1/", None, since)[0]).query), "None: the default set"

    many = {f"topic-{i}": {"seq": i, "epoch": "epoch-123"} for i in range(300)}
    url, later = recovery_url("ws://h:1/", list(many), many)
    q = parse_qs(urlsplit(url).query)
    assert len(url) < 200 and q["topics"] == ["topic-0"] and list(json.loads(q["since"][0])) == ["topic-0"]
    assert later == {"action": "subscribe", "topics": list(many), "since": {t: many[t] for t in list(many)[1:]}, "snapshot": True}
