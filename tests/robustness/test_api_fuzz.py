"""Fuzz of the HTTP API bodies (PROTOCOL.md section 7) against one real in-process daemon.

Hundreds of bodies -- arbitrary JSON values, near-valid publish bodies wrong in one field, raw
bytes, truncated JSON, bodies over ``max_body_bytes`` -- are POSTed to /api/publish and
/api/broadcast.  Every answer must be 200 with the documented shape or the 4xx an independent
oracle (written from the protocol document) expects, with ``{"ok":false,"error":{"code","message"}}``;
never a 5xx.  A rejected body publishes nothing (no seq moves, no client receives anything); an
accepted one moves exactly its topic's seq by one, and a client subscribed to everything receives
exactly the accepted messages, in order, with the data that was posted.
"""

from __future__ import annotations

import json
import random
from typing import Any

import hypothesis.strategies as st
import orjson
import trio
from hypothesis import HealthCheck, given, settings

from tests.conftest import DEFAULT_TOPICS, api_client, connect, running_daemon

MAX_BODY = 2048
N_BODIES = 400
MISSING = object()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = st.text(max_size=6) | st.integers(-5, 2**63 - 1) | st.sampled_from([True, False, None, 1.5, [], {}])
entity = st.dictionaries(st.sampled_from(["id", "name", "v"]), json_values, max_size=3) | st.fixed_dictionaries(
    {"id": ids}, optional={"v": json_values}
)


@st.composite
def publish_bodies(draw: Any) -> dict[str, Any]:
    """A publish body, each field right or wrong."""
    body: dict[str, Any] = {}
    topic = draw(st.sampled_from([*DEFAULT_TOPICS, *DEFAULT_TOPICS, "nope", "", None, MISSING, 5, ["cameras"]]))
    if topic is not MISSING:
        body["topic"] = topic
    kind = draw(st.sampled_from(["UPDATE", "UPDATE", "ALERT", "ALERT", MISSING, "update", "", 1, None]))
    if kind is not MISSING:
        body["type"] = kind
    data = draw(
        st.one_of(
            st.just(MISSING),
            st.lists(entity, max_size=4),
            st.lists(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=4) | st.integers(0, 99)}), max_size=4),
            entity,
            json_values,
        )
    )
    if data is not MISSING:
        body["data"] = data
    removed = draw(st.one_of(st.just(MISSING), st.just(MISSING), st.lists(ids, max_size=3), json_values))
    if removed is not MISSING:
        body["removed"] = removed
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["extra", "seq", "Topic"]))] = draw(json_values)
    return body


good_ids = st.text(min_size=1, max_size=4) | st.integers(0, 2**63 - 1)
valid_bodies = st.one_of(
    st.fixed_dictionaries(
        {"topic": st.sampled_from([*DEFAULT_TOPICS, "nope"]), "data": st.lists(st.fixed_dictionaries({"id": good_ids}, optional={"v": json_values}), max_size=3)},
        optional={"type": st.just("UPDATE"), "removed": st.lists(good_ids, max_size=3) | st.none()},
    ),
    st.fixed_dictionaries({"topic": st.sampled_from(DEFAULT_TOPICS), "data": st.fixed_dictionaries({"id": good_ids, "v": json_values})}),
    st.fixed_dictionaries({"topic": st.sampled_from([*DEFAULT_TOPICS, "nope"]), "type": st.just("ALERT"), "data": json_values}),
    st.fixed_dictionaries({"type": st.just("ALERT"), "data": json_values}),  # a broadcast of no topic
)

bodies = st.one_of(
    valid_bodies.map(lambda b: orjson.dumps(b)),
    valid_bodies.map(lambda b: orjson.dumps(b)),
    publish_bodies().map(lambda b: orjson.dumps(b)),
    publish_bodies().map(lambda b: orjson.dumps(b)),
    publish_bodies().map(lambda b: orjson.dumps(b)),
    json_values.map(lambda v: orjson.dumps(v)),
    st.binary(max_size=64),
    publish_bodies().flatmap(lambda b: st.integers(0, max(0, len(orjson.dumps(b)) - 1)).map(lambda n: orjson.dumps(b)[:n])),
    st.builds(lambda n: orjson.dumps({"topic": "cameras", "data": [{"id": "big", "pad": "x" * n}]}), st.integers(MAX_BODY - 100, MAX_BODY + 200)),
    st.sampled_from([b"", b"null", b"{}", b"[]", b'{"topic":"cameras"}', b'{"topic":"cameras","data":{"id":1.0}}', b"\xff\xfe", b'{"topic":"cameras",}']),
)


def _draw_bodies() -> list[bytes]:
    drawn: list[bytes] = []

    @settings(max_examples=N_BODIES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def collect(body: bytes) -> None:
        drawn.append(body)

    collect()
    return drawn


def _valid_id(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def oracle(raw: bytes, *, broadcast: bool) -> tuple[int, Any]:
    """(status, the message a subscriber gets or None) from PROTOCOL.md 4 and 7 alone."""
    if len(raw) > MAX_BODY:
        return 413, None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 400, None
    if not isinstance(body, dict) or set(body) - {"topic", "type", "data", "removed"}:
        return 400, None
    kind = body.get("type", "UPDATE")
    if kind not in ("UPDATE", "ALERT"):
        return 400, None
    topic = body.get("topic")
    if topic is not None or not broadcast:
        if not isinstance(topic, str) or not topic:
            return 400, None
    if kind == "ALERT":
        if "data" not in body or "removed" in body:
            return 400, None
        message = {"type": "ALERT", "data": body["data"]}
    else:
        data = body.get("data", [])
        entities = [data] if isinstance(data, dict) else data
        if not isinstance(entities, list) or not all(isinstance(e, dict) and _valid_id(e.get("id")) for e in entities):
            return 400, None
        removed = body.get("removed")
        if removed is not None and (not isinstance(removed, list) or not all(_valid_id(r) for r in removed)):
            return 400, None
        message = {"type": "UPDATE", "data": entities}
        if removed:
            message["removed"] = [str(r) for r in removed]
    if topic is not None:
        if topic not in DEFAULT_TOPICS:
            return 404, None
        message["topic"] = topic
    return 200, message


def seqs(daemon: Any) -> dict[str, int]:
    return {name: state.seq for name, state in daemon.hub.topics.topics.items()}


async def test_api_bodies_get_documented_answers_and_rejected_ones_publish_nothing() -> None:
    drawn = _draw_bodies()
    assert len(drawn) == N_BODIES
    rng = random.Random(4)
    statuses: dict[int, int] = {}
    async with running_daemon({"api": {"max_body_bytes": MAX_BODY}, "server": {"max_queue_bytes": 64 << 20}}) as d:
        watcher = await connect(d)
        expected: list[dict[str, Any]] = []
        async with api_client(d) as http:
            for i, raw in enumerate(drawn):
                broadcast = rng.random() < 0.3
                path = "/api/broadcast" if broadcast else "/api/publish"
                want_status, want_message = oracle(raw, broadcast=broadcast)
                before = seqs(d)
                r = await http.post(path, content=raw, headers={"content-type": "application/json"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (raw, r.status_code, r.text)
                answer = r.json()
                after = seqs(d)
                assert r.status_code == want_status, (path, raw[:200], r.status_code, answer)
                if r.status_code != 200:
                    assert answer["ok"] is False and set(answer) == {"ok", "error"}, answer
                    assert isinstance(answer["error"]["code"], str) and answer["error"]["code"]
                    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
                    assert after == before, f"rejected body {raw[:200]!r} moved a seq"
                    continue
                assert answer["ok"] is True and answer["recipients"] == 1, answer
                topic = want_message.get("topic")
                moved = {t for t in after if after[t] != before[t]}
                if topic is None:
                    assert moved == set() and set(answer) == {"ok", "recipients"}
                else:
                    assert moved == {topic} and after[topic] == before[topic] + 1
                    want_message["seq"] = after[topic]
                    if broadcast:
                        assert set(answer) == {"ok", "recipients"}
                    else:
                        assert set(answer) == {"ok", "seq", "recipients"} and answer["seq"] == after[topic]
                expected.append(want_message)
        # The watcher (subscribed to all) got exactly the accepted messages, in order, as posted.
        got = []
        with trio.fail_after(20):
            while len(got) < len(expected):
                msg = await watcher.recv_json()
                msg.pop("timestamp")
                got.append(msg)
        assert got == expected
        tail = await watcher.barrier()
        assert tail == [], "a rejected body reached a client"
    print(f"\nAPI fuzz: {len(drawn)} bodies, answers by status {dict(sorted(statuses.items()))}, {len(expected)} published")
    assert statuses.get(200, 0) >= 30 and statuses.get(400, 0) >= 100, "the generator lost its mix"
    assert statuses.get(404, 0) >= 5 and statuses.get(413, 0) >= 5
