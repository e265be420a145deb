"""PROTOCOL.md section 8 over real sockets against a real daemon (memory broker): positions in every
SNAPSHOT, ``?topics=``/``?since=`` on the handshake, ``since`` on subscribe, the recovery answer
(replayed byte for byte, the verdicts), publishes racing the recovery, and a seeded property run
of many clients cut at random while publishing: zero silent losses."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import trio

from tests.conftest import DEFAULT_TOPICS, api_client, connect, running_daemon
from tests.wsclient import RawClient, Rejected
from uipd.core import publish
from uipd.runtime.daemon import Daemon


async def pub(d: Daemon, topic: str, n: int = 1, *, alert_every: int = 0, start: int = 0) -> list[int]:
    """Publish through the daemon's broker (as the API does); the seqs."""
    seqs = []
    for i in range(start, start + n):
        if alert_every and i % alert_every == alert_every - 1:
            p = publish.alert(topic, {"n": i, "message": f"alert {i}"})
        else:
            p = publish.update(topic, [{"id": f"e{i % 7}", "n": i}])
        seqs.append((await d.publish(p)).seq)
    return seqs


def url(topics: list[str] | None = None, since: dict[str, Any] | None = None) -> str:
    q = []
    if topics is not None:
        q.append("topics=" + ",".join(topics))
    if since is not None:
        q.append("since=" + quote(json.dumps(since)))
    return "/?" + "&".join(q) if q else "/"


class Tracker:
    """A client following the section 8 client rules: keep a position per topic, apply a message
    only if its seq is the last + 1, ignore duplicates, note any gap (a test failure here)."""

    def __init__(self) -> None:
        self.positions: dict[str, dict[str, Any]] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self.alerts: set[tuple[str, int]] = set()
        """ALERTs received live, replayed or listed in missedAlerts."""
        self.lost: set[str] = set()
        self.gaps: list[tuple[str, int, int]] = []
        self.replayed = 0

    def since(self) -> dict[str, Any]:
        return {t: dict(p) for t, p in self.positions.items()}

    def apply(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "SNAPSHOT":
            assert set(msg.get("positions", {})) == set(msg["data"]), msg  # one position per section
            for topic, entities in msg["data"].items():
                self.state[topic] = {str(e["id"]): e for e in entities}
                self.positions[topic] = msg["positions"][topic]
            for topic, alerts in msg.get("missedAlerts", {}).items():
                for a in alerts:
                    assert a["type"] == "ALERT" and a["topic"] == topic
                    self.alerts.add((topic, a["seq"]))
            self.lost.update(msg.get("alertsLost", ()))
        elif kind in ("UPDATE", "ALERT") and "topic" in msg:
            topic, seq = msg["topic"], msg["seq"]
            last = self.positions[topic]["seq"]
            if seq <= last:
                return  # a duplicate
            if seq != last + 1:
                self.gaps.append((topic, last, seq))
                return
            self.positions[topic] = {"seq": seq, "epoch": self.positions[topic]["epoch"]}
            if kind == "UPDATE":
                state = self.state[topic]
                for e in msg["data"]:
                    state[str(e["id"])] = e
                for r in msg.get("removed", ()):
                    state.pop(r, None)
            else:
                self.alerts.add((topic, seq))


def server_state(d: Daemon, topic: str) -> dict[str, Any]:
    return {k: dict(v) for k, v in d.hub.topics.state_of(topic).items()}


def epoch(d: Daemon, topic: str) -> str:
    return d.hub.topics.topics[topic].epoch


async def open_with(d: Daemon, path: str) -> tuple[RawClient, dict[str, Any]]:
    """Connect; the connection message checked, the SNAPSHOT (the recovery answer) returned."""
    c = await RawClient.connect(d.ws_port, path)
    assert (await c.recv_json())["type"] == "connection"
    snap = await c.recv_json()
    assert snap["type"] == "SNAPSHOT"
    return c, snap


async def read_texts(c: RawClient, n: int) -> list[str]:
    return [await c.recv() for _ in range(n)]


# -- positions everywhere ------------------------------------------------------------------------


async def test_every_snapshot_carries_positions(daemon):
    await pub(daemon, "weather", 3)
    c = await RawClient.connect(daemon.ws_port)
    await c.recv_json()
    first = await c.recv_json()
    assert first["positions"] == {t: {"seq": 3 if t == "weather" else 0, "epoch": epoch(daemon, t)} for t in DEFAULT_TOPICS}
    assert "recovered" not in first and len(epoch(daemon, "weather")) >= 8
    await c.send_json({"action": "snapshot", "topics": ["weather"]})
    asked = await c.recv_json()
    assert asked["positions"] == {"weather": {"seq": 3, "epoch": epoch(daemon, "weather")}}
    await c.send_json({"action": "unsubscribe", "topics": ["cameras"]})
    await c.recv_json()
    await c.send_json({"action": "subscribe", "topics": ["cameras"], "snapshot": True})
    assert (await c.recv_json())["type"] == "SUBSCRIBED"
    sub = await c.recv_json()
    assert sub["type"] == "SNAPSHOT" and sub["positions"] == {"cameras": {"seq": 0, "epoch": epoch(daemon, "cameras")}}
    # a resync (as after a cluster reload) carries positions too
    await pub(daemon, "accidents", 2)
    assert [m["seq"] for m in [await c.recv_json(), await c.recv_json()]] == [1, 2]
    daemon.hub.resync_all()
    resync = await c.recv_json()
    assert resync["type"] == "SNAPSHOT" and resync["resync"] is True
    assert resync["positions"]["accidents"] == {"seq": 2, "epoch": epoch(daemon, "accidents")}
    assert set(resync["positions"]) == set(resync["data"])
    await c.aclose()


# -- the recovery answer -------------------------------------------------------------------------


async def test_cut_mid_stream_and_recover_byte_for_byte(daemon):
    await pub(daemon, "accidents", 5, alert_every=2)
    stayed = await connect(daemon, url(["accidents"]))
    leaving = await connect(daemon, url(["accidents"]))
    await pub(daemon, "accidents", 3, alert_every=2, start=5)
    seen = [json.loads(t) for t in await read_texts(leaving, 3)]
    mark = {"seq": seen[-1]["seq"], "epoch": epoch(daemon, "accidents")}
    await leaving.aclose()  # the link is cut
    await pub(daemon, "accidents", 6, alert_every=2, start=8)
    live = await read_texts(stayed, 9)
    back, answer = await open_with(daemon, url(["accidents"], {"accidents": mark}))
    assert answer["recovered"] == ["accidents"] and answer["data"] == {} and answer["alertsLost"] == []
    replay = await read_texts(back, 6)
    assert replay == live[3:]  # the same messages, the same bytes, their original timestamps
    assert [json.loads(t)["seq"] for t in replay] == list(range(9, 15))
    # then live messages, no gap, no duplicate
    await pub(daemon, "accidents", 1, start=20)
    assert json.loads(await back.recv())["seq"] == 15 and json.loads(await stayed.recv())["seq"] == 15
    assert daemon.hub.counters.recoveries["replayed"] == 1 and daemon.hub.counters.replayed_messages == 6
    await back.aclose()
    await stayed.aclose()


async def test_zero_replay_at_the_head(daemon):
    await pub(daemon, "weather", 4)
    c, answer = await open_with(daemon, url(["weather", "cameras"], {"weather": {"seq": 4, "epoch": epoch(daemon, "weather")}}))
    assert answer["recovered"] == ["weather"] and list(answer["data"]) == ["cameras"]
    assert answer["positions"] == {"cameras": {"seq": 0, "epoch": epoch(daemon, "cameras")}}
    assert await c.barrier() == []  # nothing replayed
    await c.aclose()


async def test_wrong_epoch_beyond_history_and_over_max_replay(daemon_factory):
    async with daemon_factory({"history": {"size": 20, "max_replay": 5}}) as d:
        await pub(d, "weather", 30)
        await pub(d, "accidents", 8, alert_every=2)
        await pub(d, "cameras", 2)
        since = {
            "weather": {"seq": 3, "epoch": epoch(d, "weather")},  # history holds 11-30: too old
            "accidents": {"seq": 0, "epoch": epoch(d, "accidents")},  # 8 > max_replay 5
            "cameras": {"seq": 2, "epoch": "from-an-old-run"},  # wrong epoch
            "patterns": {"seq": 0, "epoch": epoch(d, "patterns")},  # at the head
        }
        c, answer = await open_with(d, url(["weather", "accidents", "cameras", "patterns"], since))
        assert answer["recovered"] == ["patterns"]
        assert answer["alertsLost"] == ["cameras", "weather"]
        missed = answer["missedAlerts"]["accidents"]
        assert [a["seq"] for a in missed] == [2, 4, 6, 8] and missed[0]["data"]["message"] == "alert 1"
        assert list(answer["data"]) == ["cameras", "weather", "accidents"]
        assert answer["positions"]["weather"]["seq"] == 30 and answer["positions"]["accidents"]["seq"] == 8
        assert len(answer["data"]["weather"]) == 7
        assert await c.barrier() == []
        counts = d.hub.counters.recoveries
        assert (counts["replayed"], counts["too_old"], counts["too_many"], counts["epoch_changed"]) == (1, 1, 1, 1)
        await c.aclose()


async def test_several_topics_replayed_in_one_answer_then_live(daemon):
    c0 = await connect(daemon, url(["weather", "accidents"]))
    marks = {t: {"seq": 0, "epoch": epoch(daemon, t)} for t in ("weather", "accidents")}
    await c0.aclose()
    await pub(daemon, "weather", 3)
    await pub(daemon, "accidents", 2, alert_every=1)
    t = Tracker()
    c, answer = await open_with(daemon, url(["weather", "accidents"], marks))
    t.positions = dict(marks)
    t.state = {"weather": {}, "accidents": {}}
    t.apply(answer)
    assert answer["recovered"] == ["weather", "accidents"]
    for m in await c.barrier():
        t.apply(m)
    assert t.gaps == [] and t.state["weather"] == server_state(daemon, "weather")
    assert t.alerts == {("accidents", 1), ("accidents", 2)}
    await c.aclose()


async def test_publishes_racing_the_recoveries(daemon):
    """Clients reconnect with since while a task publishes: each gets every message exactly once,
    in order, whatever it was racing."""
    await pub(daemon, "accidents", 10, alert_every=3)
    mark = {"seq": 10, "epoch": epoch(daemon, "accidents")}
    done, finished = trio.Event(), trio.Event()
    published: list[int] = []
    results: list[Tracker] = []

    async def publisher() -> None:
        i = 100
        while not done.is_set():
            published.extend(await pub(daemon, "accidents", 1, alert_every=3, start=i))
            i += 1
            await trio.sleep(0)
        finished.set()

    async def client() -> None:
        t = Tracker()
        t.positions = {"accidents": dict(mark)}
        t.state = {"accidents": {}}
        c, answer = await open_with(daemon, url(["accidents"], {"accidents": mark}))
        t.apply(answer)
        while not done.is_set():
            with trio.move_on_after(0.05):
                t.apply(await c.recv_json())
        await finished.wait()
        for m in await c.barrier():
            t.apply(m)
        results.append(t)
        await c.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        for _ in range(20):
            nursery.start_soon(client)
        await trio.sleep(0.8)
        done.set()
    head = daemon.hub.topics.topics["accidents"].seq
    published_alerts = {("accidents", s) for s, i in zip(published, range(100, 100 + len(published))) if i % 3 == 2}
    assert len(results) == 20 and published_alerts
    for t in results:
        assert t.gaps == [] and t.positions["accidents"]["seq"] == head
        assert published_alerts <= t.alerts
    assert daemon.hub.counters.recoveries["replayed"] == 20


# -- subscribe with since ------------------------------------------------------------------------


async def test_subscribe_with_since(daemon):
    c = await connect(daemon, url(["cameras"]))
    await pub(daemon, "weather", 3)
    await c.send_json({"action": "subscribe", "topics": ["weather", "patterns"], "snapshot": True,
                       "since": {"weather": {"seq": 1, "epoch": epoch(daemon, "weather")}}})
    assert (await c.recv_json())["topics"] == ["cameras", "patterns", "weather"]
    answer = await c.recv_json()
    assert answer["recovered"] == ["weather"] and list(answer["data"]) == ["patterns"]
    assert [m["seq"] for m in await c.barrier()] == [2, 3]
    await c.aclose()


async def test_subscribe_with_malformed_since_is_bad_request_and_changes_nothing(daemon):
    c = await connect(daemon, url(["cameras"]))
    for since in ({"weather": {"seq": -1, "epoch": "x"}}, "x", {"weather": None}):
        await c.send_json({"action": "subscribe", "topics": ["weather"], "since": since})
        err = await c.recv_json()
        assert err["type"] == "ERROR" and err["error"]["code"] == "bad_request"
    await c.send_json({"action": "subscribe", "topics": ["weather"], "since": {"nope": {"seq": 1, "epoch": "x"}}})
    assert (await c.recv_json())["error"]["code"] == "unknown_topic"
    await pub(daemon, "weather", 1)
    assert await c.barrier() == []  # still subscribed to cameras only
    await c.aclose()


# -- the handshake -------------------------------------------------------------------------------


async def test_handshake_topics_and_since_refusals(daemon_factory):
    key = "k" * 32
    async with daemon_factory({"auth": {"mode": "jwt", "jwt_key": key}}) as d:
        token = jwt.encode({"topics": ["weather"]}, key, algorithm="HS256")

        async def status(path: str) -> int:
            with pytest.raises(Rejected) as info:
                await RawClient.connect(d.ws_port, path)
            return info.value.status

        good = {"weather": {"seq": 0, "epoch": epoch(d, "weather")}}
        assert await status(url(["weather", "nope"]) + f"&token={token}") == 400
        assert await status("/?since=%7Bnot-json&token=" + token) == 400
        assert await status(url(["weather"], {"weather": {"seq": "1", "epoch": "e"}}) + f"&token={token}") == 400
        assert await status(url(["weather"], {"nope": {"seq": 1, "epoch": "e"}}) + f"&token={token}") == 400
        assert await status(url(["weather", "cameras"]) + f"&token={token}") == 403
        assert await status(url(["all"]) + f"&token={token}") == 403
        assert await status(url(["weather"]) + "&token=bad") == 401  # credentials first
        assert d.clients.refusals["bad_query"] == 4 and d.clients.refusals["forbidden_topic"] == 2
        assert d.clients.pending == 0 and not d.clients.per_ip  # refused slots given back
        c, answer = await open_with(d, url(["weather"], good) + f"&token={token}")
        assert answer["recovered"] == ["weather"]
        await c.send_json({"action": "subscribe", "topics": ["weather"]})
        assert (await c.recv_json())["topics"] == ["weather"]
        await c.aclose()


async def test_handshake_topics_is_the_first_subscribe(daemon):
    c, snap = await open_with(daemon, url(["weather"]))
    assert list(snap["data"]) == ["weather"] and "recovered" not in snap
    await c.send_json({"action": "subscribe", "topics": ["cameras"]})
    assert (await c.recv_json())["topics"] == ["cameras", "weather"]  # added to, not replacing
    await c.aclose()


# -- stats and metrics ---------------------------------------------------------------------------


async def test_history_in_stats_and_recoveries_in_metrics(daemon):
    await pub(daemon, "weather", 4)
    c, _ = await open_with(daemon, url(["weather"], {"weather": {"seq": 1, "epoch": epoch(daemon, "weather")}}))
    await c.barrier()
    async with api_client(daemon) as http:
        stats = (await http.get("/api/stats")).json()["topics"]["weather"]
        metrics = (await http.get("/metrics")).text
    assert stats["epoch"] == epoch(daemon, "weather") and stats["history"] == 4 and stats["historyBytes"] > 0
    assert 'uipd_recoveries_total{outcome="replayed"} 1.0' in metrics
    assert 'uipd_recoveries_total{outcome="too_old"} 0.0' in metrics
    assert "uipd_replayed_messages_total 3.0" in metrics
    assert 'uipd_history_messages{topic="weather"} 4.0' in metrics
    assert f'uipd_history_bytes{{topic="weather"}} {float(stats["historyBytes"])}' in metrics
    await c.aclose()


# -- the property: zero silent losses ------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_cuts_during_random_publishes_lose_nothing_silently(seed):
    rng = random.Random(seed)
    topics = ["weather", "accidents", "cameras"]
    config = {"history": {"size": 12, "max_replay": 3}, "heartbeat": {"interval": 5, "timeout": 20}}
    async with running_daemon(config) as d:
        alerts: set[tuple[str, int]] = set()
        stop, finished = trio.Event(), trio.Event()

        async def publisher() -> None:
            i = 0
            while not stop.is_set():
                topic = rng.choice(topics)
                if rng.random() < 0.3:
                    seq = (await d.publish(publish.alert(topic, {"n": i}))).seq
                    alerts.add((topic, seq))
                else:
                    removed = [f"e{rng.randrange(9)}"] if rng.random() < 0.2 else []
                    await d.publish(publish.update(topic, [{"id": f"e{rng.randrange(9)}", "n": i}], removed))
                i += 1
                if rng.random() < 0.3:
                    await trio.sleep(rng.random() * 0.01)
                else:
                    await trio.sleep(0)
            finished.set()

        trackers: list[tuple[Tracker, dict[str, int]]] = []

        async def client(k: int) -> None:
            t = Tracker()
            first: dict[str, int] = {}
            subset = topics if k % 3 else rng.sample(topics, 2)
            c, snap = await open_with(d, url(subset))
            t.apply(snap)
            first.update({topic: p["seq"] for topic, p in t.positions.items()})
            while not stop.is_set():
                with trio.move_on_after(rng.random() * 0.15):
                    while True:
                        t.apply(await c.recv_json())
                await c.aclose()  # cut, wherever the stream is
                await trio.sleep(rng.random() * 0.1)
                c, answer = await open_with(d, url(subset, t.since()))
                t.apply(answer)
            await finished.wait()
            for m in await c.barrier():
                t.apply(m)
            await c.aclose()
            trackers.append((t, first))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            for k in range(12):
                nursery.start_soon(client, k)
            await trio.sleep(2.0)
            stop.set()
        assert len(trackers) == 12
        counts = d.hub.counters.recoveries
        # Every reconnect was a recovery; which outcome each got depends on the machine's speed
        # (how many publishes a cut outlasts), so the property below is what is asserted.
        assert sum(counts.values()) > 0
        for t, first in trackers:
            assert t.gaps == []
            for topic in first:
                state = d.hub.topics.topics[topic]
                assert t.positions[topic] == {"seq": state.seq, "epoch": state.epoch}
                assert t.state[topic] == server_state(d, topic)
                owed = {(tp, s) for tp, s in alerts if tp == topic and s > first[topic]}
                silent = owed - t.alerts
                assert not silent or topic in t.lost, (topic, sorted(silent))
