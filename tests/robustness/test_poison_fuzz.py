"""Poison data through every entry point of one real daemon (issue 12): the HTTP API's
``/api/publish`` and ``/api/broadcast``, a source's ``update``/``replace``/``alert``, MQTT payloads
(real Mosquitto on 127.0.0.1:1883) and NGSI-LD notifications (``/sources/NAME/notify``).

Values: nesting around and past the encoder's 254 levels (and past the decoders' limits),
what JSON cannot hold (sets, Decimals, datetimes, bytes, dicts with int keys, integers beyond 64
bits, NaN and infinities, lone surrogates), duplicate keys, odd ids (empty, 10 000 characters,
non-ASCII, int against str, bool, null, float).  An independent oracle, written from the protocol
(JSON holds objects with string keys, arrays, strings, finite numbers, 64-bit integers, booleans
and null, at most 254 levels deep), says which inputs are accepted.  After every input the seqs in
``/api/stats`` moved exactly for an accepted one, and a fresh client's SNAPSHOT is the model's state;
a canary client connected throughout receives exactly the accepted messages, in order, and the
daemon never exits.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis.strategies as st
import orjson
import trio
from attrs import define, field
from hypothesis import HealthCheck, given, settings
from paho.mqtt.client import CallbackAPIVersion, Client

from tests.conftest import DEFAULT_TOPICS, api_client, connect, running_daemon
from tests.sources.test_supervision import inline_plugin
from tests.wsclient import RawClient

MAX_DEPTH = 254
"""Arrays and objects nested deeper than this cannot be encoded (the limit uipd documents)."""
JSON_HEADERS = {"content-type": "application/json"}
MQTT_BROKER = ("127.0.0.1", 1883)
SOURCE_TOPICS = ("src", "srcr")
TOPICS = [*DEFAULT_TOPICS, *SOURCE_TOPICS, "mq", "ngsi"]


# -- the oracle -------------------------------------------------------------------------------------


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def json_holds(value: Any, depth: int = 0) -> bool:
    """What JSON (and so a publish) can carry; ``depth``: levels already around ``value``.
    Iterative: poison values nest deeper than Python's recursion limit."""
    stack = [(value, depth)]
    while stack:
        v, d = stack.pop()
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not -(2**63) <= v < 2**64:
                return False
        elif isinstance(v, float):
            if not math.isfinite(v):
                return False
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, (list, tuple, dict)):
            if d + 1 > MAX_DEPTH:
                return False
            if isinstance(v, dict):
                if not all(isinstance(k, str) and json_holds(k) for k in v):
                    return False
                stack.extend((x, d + 1) for x in v.values())
            else:
                stack.extend((x, d + 1) for x in v)
        else:
            return False  # set, Decimal, datetime, bytes, ...
    return True


def valid_id(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def canonical(value: Any) -> Any:
    """What a client receives for an accepted value (a tuple is an array)."""
    return json.loads(json.dumps(value))


def loads_like_python(text: bytes) -> tuple[bool, Any]:
    """How a plugin reading with the stdlib (MQTT, NGSI-LD) must see ``text``: NaN and Infinity are
    not JSON; nesting past the decoder is bad input."""

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return True, json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return False, None


# -- values -----------------------------------------------------------------------------------------


@define
class Pairs:
    """A JSON object as written on the wire: its members may repeat a key (the last one wins)."""

    items: list[tuple[str, Any]]


@define
class Deep:
    """``levels`` arrays around ``inner``, written as text (deeper than Python's recursion limit)."""

    levels: int
    inner: Any


def to_text(v: Any) -> str:
    if isinstance(v, Deep):
        return "[" * v.levels + to_text(v.inner) + "]" * v.levels
    if isinstance(v, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{to_text(x)}" for k, x in v.items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(to_text(x) for x in v) + "]"
    return json.dumps(v)  # NaN, Infinity and lone surrogates ("\ud800") are written as Python does


def nest(levels: int, inner: Any) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


keys = st.sampled_from(["a", "b", "", "é", "日本", "v"])
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
clean_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | text
wire_poison = st.sampled_from([math.nan, math.inf, -math.inf, "\ud800", 2**64, -(2**63) - 1, 10**30])
wire_values = st.recursive(
    clean_leaves | wire_poison | st.builds(Deep, st.sampled_from([200, 252, 253, 254, 300, 1100]), clean_leaves),
    lambda inner: st.lists(inner, max_size=3) | st.builds(Pairs, st.lists(st.tuples(keys, inner), max_size=3)),
    max_leaves=6,
)
python_poison = st.sampled_from(
    [{1, 2}, decimal.Decimal("1.5"), datetime.datetime(2025, 1, 1), b"x", {1: "int key"}, math.nan, -math.inf, "\ud800", 2**64, -(2**63) - 1]
)
python_values = st.recursive(
    clean_leaves | python_poison | st.builds(nest, st.sampled_from([250, 252, 253, 300, 600]), clean_leaves),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=2).map(tuple) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
odd_ids = st.one_of(
    st.just(""), st.just("x" * 10_000), st.just("Ngã tư Hàng Xanh"), st.integers(0, 2**63 - 1), st.integers(2**64, 2**70),
    st.sampled_from(["7", 7, True, None, 1.5, "\ud800"]), text,
)


def draw_all(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    drawn: list[Any] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


# -- the harness ------------------------------------------------------------------------------------


class Driven:
    """A source driven by the test: ``run`` hands over its publisher, the test publishes through it
    (synchronously, as a source's task does)."""

    topics = SOURCE_TOPICS
    publisher: Any = None

    async def run(self, publisher: Any) -> None:
        Driven.publisher = publisher
        publisher.ready()
        await trio.sleep_forever()


@define
class Harness:
    daemon: Any
    http: httpx.AsyncClient
    canary: RawClient
    received: list[dict[str, Any]] = field(factory=list)
    expected: list[tuple[Any, ...]] = field(factory=list)
    """What the canary must receive: (type, topic, seq, data, removed), in order."""
    model: dict[str, dict[str, Any]] = field(factory=lambda: {t: {} for t in TOPICS})
    inputs: int = 0
    refused: int = 0
    tally: Counter[tuple[str, bool]] = field(factory=Counter)
    """(entry point, accepted) -> inputs, for the printed figures."""

    async def read_canary(self) -> None:
        while True:
            msg = json.loads(await self.canary.recv(timeout=120))
            if msg["type"] in ("UPDATE", "ALERT"):
                self.received.append(msg)

    async def seqs(self) -> dict[str, int]:
        r = await self.http.get("/api/stats")
        assert r.status_code == 200
        return {name: t["seq"] for name, t in r.json()["topics"].items()}

    async def snapshot(self) -> dict[str, list[Any]]:
        client = await RawClient.connect(self.daemon.ws_port)
        try:
            assert (await client.recv_json())["type"] == "connection"
            snap = await client.recv_json()
            assert snap["type"] == "SNAPSHOT"
            return snap["data"]
        finally:
            await client.aclose()

    async def step(self, topic: str | None, attempt: Callable[[], Any], accepted: bool) -> None:
        """Run one input; ``attempt`` returns the message it published (type, data, removed) or None."""
        self.inputs += 1
        before = await self.seqs()
        published = await attempt()
        after = await self.seqs()
        assert (published is not None) == accepted, (topic, published)
        self.tally[({"src": "source", "srcr": "source", "mq": "mqtt", "ngsi": "ngsi-ld"}.get(topic or "", "api"), accepted)] += 1
        if published is None:
            self.refused += 1
            assert after == before
        else:
            kind, data, removed = published
            if topic is not None:
                assert after == {**before, topic: before[topic] + 1}
            else:
                assert after == before
            self.expected.append((kind, topic, after[topic] if topic else None, data, removed))
            if kind == "UPDATE" and topic is not None:
                for e in data:
                    self.model[topic][str(e["id"])] = e
                for key in removed:
                    self.model[topic].pop(key, None)
        if published is None or self.inputs % 10 == 0:
            assert await self.snapshot() == {t: list(entities.values()) for t, entities in self.model.items()}

    async def finish(self) -> None:
        """Every accepted message reached the canary, in order, and nothing else did."""
        r = await self.http.post("/api/broadcast", json={"type": "ALERT", "data": "sentinel"}, headers=JSON_HEADERS)
        assert r.status_code == 200
        with trio.fail_after(10):
            while not self.received or self.received[-1].get("data") != "sentinel":
                await trio.sleep(0.01)
        got = [(m["type"], m.get("topic"), m.get("seq"), m["data"], m.get("removed", [])) for m in self.received[:-1]]
        assert got == self.expected
        for t in TOPICS:  # connected from the start, the canary saw every seq of every topic
            seqs = [m["seq"] for m in self.received if m.get("topic") == t]
            assert seqs == list(range(1, len(seqs) + 1))
        assert (await self.http.get("/healthz")).status_code == 200


def config() -> dict[str, Any]:
    return {
        "server": {"topics": DEFAULT_TOPICS},
        "sources": {
            "drv": {"plugin": "driven"},
            "mqtt": {"plugin": "mqtt", "routes": [{"filter": "uipd-poison/+", "topic": "mq", "id_field": "id"}], "reconnect_min_delay": 0.05},
            "ctx": {"plugin": "ngsi-ld", "base_url": "http://127.0.0.1:9", "interval": 60.0, "retry_min_backoff": 60.0, "entities": [{"type": "Camera", "topic": "ngsi"}]},
        },
    }


# -- entry points -----------------------------------------------------------------------------------


async def api_inputs(h: Harness) -> None:
    entity_pairs = st.builds(lambda i, v, extra: Pairs([("id", i), ("v", v), *extra]), odd_ids, wire_values, st.lists(st.tuples(keys, wire_values), max_size=1))
    bodies = st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(DEFAULT_TOPICS), st.just("UPDATE"), st.lists(entity_pairs, max_size=2)),
        st.tuples(st.just("publish"), st.sampled_from(DEFAULT_TOPICS), st.just("ALERT"), wire_values),
        st.tuples(st.just("broadcast"), st.sampled_from([*DEFAULT_TOPICS, None]), st.sampled_from(["UPDATE", "ALERT"]), st.lists(entity_pairs, max_size=2)),
    )
    for path, topic, kind, data in draw_all(bodies, 90):
        members = [f'"type":"{kind}"', f'"data":{to_text(data)}'] + ([f'"topic":"{topic}"'] if topic else [])
        raw = ("{" + ",".join(members) + "}").encode()
        # the oracle reads the body as JSON defines it (exact integers; NaN and Infinity are not
        # JSON); json_holds then says what a publish can carry (no lone surrogates, integers
        # within 64 bits, bounded nesting)
        try:
            decoded = json.loads(raw, parse_constant=_not_json)["data"]
        except (ValueError, RecursionError):
            ok = False
        else:
            if kind == "UPDATE":
                ok = all(isinstance(e, dict) and valid_id(e.get("id")) for e in decoded) and json_holds(decoded)
            else:
                ok = json_holds(decoded)

        async def attempt(raw: bytes = raw, path: str = path, kind: str = kind, topic: str | None = topic) -> Any:
            r = await h.http.post(f"/api/{path}", content=raw, headers=JSON_HEADERS)
            assert r.status_code in (200, 400), (r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()["error"]["message"]
                return None
            return (kind, orjson.loads(raw)["data"], [])

        # a broadcast UPDATE of a topic changes its state like a publish; one without a topic, none
        await h.step(topic, attempt, ok)


async def source_inputs(h: Harness) -> None:
    with trio.fail_after(5):
        while Driven.publisher is None:
            await trio.sleep(0.01)
    publisher = Driven.publisher
    calls = st.tuples(st.sampled_from(["update", "replace", "alert"]), odd_ids, python_values)
    for n, (op, ident, value) in enumerate(draw_all(calls, 70)):
        entity = {"id": ident, "n": n, "v": value}
        topic = "srcr" if op == "replace" else "src"
        if op == "alert":
            ok = json_holds(value)
        else:  # the value sits in an entity in the UPDATE's list: two levels down
            ok = valid_id(ident) and json_holds(ident) and json_holds(value, 2)

        async def attempt(op: str = op, entity: dict[str, Any] = entity, value: Any = value, topic: str = topic) -> Any:
            try:
                if op == "alert":
                    publisher.alert(topic, value)
                    return ("ALERT", canonical(value), [])
                if op == "update":
                    publisher.update(topic, [entity])
                    return ("UPDATE", [canonical(entity)], [])
                gone = [k for k in h.model[topic] if k != str(entity["id"])]
                publisher.replace(topic, [entity])
                return ("UPDATE", [canonical(entity)], gone)
            except ValueError as exc:
                assert str(exc)
                return None

        await h.step(topic, attempt, ok)


class MqttPublisher:
    def __init__(self) -> None:
        self.client = Client(CallbackAPIVersion.VERSION2)

    async def __aenter__(self) -> MqttPublisher:
        def start() -> None:
            self.client.connect(*MQTT_BROKER)
            self.client.loop_start()

        await trio.to_thread.run_sync(start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        def stop() -> None:
            self.client.disconnect()
            self.client.loop_stop()

        await trio.to_thread.run_sync(stop)

    async def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        await trio.to_thread.run_sync(info.wait_for_publish, 5)


async def mqtt_inputs(h: Harness) -> None:
    source = next(cs.source for cs in h.daemon.configured_sources if cs.name == "mqtt")
    with trio.fail_after(10):
        while not source.connected:
            await trio.sleep(0.01)
    payloads = st.builds(lambda i, v, extra: Pairs([("id", i), ("v", v), *extra]), odd_ids, wire_values, st.lists(st.tuples(keys, wire_values), max_size=1))
    async with MqttPublisher() as client:
        for payload in draw_all(payloads, 50):
            raw = to_text(payload).encode("utf-8", "surrogatepass")
            parsed, data = loads_like_python(raw)
            ident = data.get("id") if parsed else None
            # the mqtt plugin takes a non-empty string or an integer id from the payload
            ok = parsed and valid_id(ident) and ident != "" and json_holds([data])

            async def attempt(raw: bytes = raw, data: Any = data) -> Any:
                seen = source.counts["messages"]
                published = source.counts["published"]
                await client.publish("uipd-poison/x", raw)
                with trio.fail_after(5):
                    while source.counts["messages"] == seen:
                        await trio.sleep(0.005)
                return ("UPDATE", [canonical(data)], []) if source.counts["published"] > published else None

            await h.step("mq", attempt, ok)


async def ngsi_inputs(h: Harness) -> None:
    entities = st.builds(
        lambda i, v: Pairs([("id", i), ("type", "Camera"), ("v", v)]), odd_ids, wire_values
    )
    for n, entity in enumerate(draw_all(entities, 50)):
        entity.items.append(("n", n))  # every notification changes the entity
        raw = ('{"type":"Notification","data":[' + to_text(entity) + "]}").encode("utf-8", "surrogatepass")
        parsed, body = loads_like_python(raw)
        mapped = body["data"][0] if parsed else None
        # the NGSI-LD source takes entities with a non-empty string id
        ok = parsed and isinstance(mapped["id"], str) and mapped["id"] != "" and json_holds([mapped])

        async def attempt(raw: bytes = raw, mapped: Any = mapped) -> Any:
            r = await h.http.post("/sources/ctx/notify", content=raw, headers=JSON_HEADERS)
            assert r.status_code in (200, 400), (r.status_code, r.text)
            if r.status_code == 200 and r.json()["changed"] == 1:
                return ("UPDATE", [canonical(mapped)], [])
            return None

        await h.step("ngsi", attempt, ok)


async def test_poison_data_through_every_entry_point(caplog: Any) -> None:
    caplog.set_level(logging.ERROR)  # every refusal is logged as a warning: hundreds of lines
    Driven.publisher = None
    async with running_daemon(config(), plugins=(inline_plugin("driven", Driven),)) as daemon:
        async with api_client(daemon) as http, trio.open_nursery() as nursery:
            canary = await connect(daemon)
            h = Harness(daemon, http, canary)
            nursery.start_soon(h.read_canary)
            await api_inputs(h)
            await source_inputs(h)
            await mqtt_inputs(h)
            await ngsi_inputs(h)
            await h.finish()
            print(f"\npoison fuzz: {h.inputs} inputs, {h.refused} refused, {len(h.expected)} accepted and received by the canary in order")
            print("  " + ", ".join(f"{entry}: {h.tally[entry, True]} accepted / {h.tally[entry, False]} refused" for entry in ("api", "source", "mqtt", "ngsi-ld")))
            assert h.refused > 50 and len(h.expected) > 50  # both kinds were really tried
            nursery.cancel_scope.cancel()


# -- the cases of issue 12 items 1, 2 and 7, one by one -------------------------------------------


async def test_api_body_nested_300_deep_is_refused_and_the_next_client_gets_its_snapshot() -> None:
    async with running_daemon() as daemon, api_client(daemon) as http:
        body = b'{"topic":"accidents","data":[{"id":"x","v":' + b"[" * 300 + b"]" * 300 + b"}]}"
        r = await http.post("/api/publish", content=body, headers=JSON_HEADERS)
        assert r.status_code == 400
        assert "entity 0 (id 'x')" in r.json()["error"]["message"] and "254" in r.json()["error"]["message"]
        stats = (await http.get("/api/stats")).json()
        assert stats["topics"]["accidents"] == {**stats["topics"]["accidents"], "seq": 0, "entities": 0}
        client = await RawClient.connect(daemon.ws_port)
        assert (await client.recv_json())["type"] == "connection"
        snapshot = await client.recv_json()
        assert snapshot["type"] == "SNAPSHOT" and snapshot["data"]["accidents"] == []
        r = await http.post("/api/publish", json={"topic": "accidents", "data": [{"id": "y"}]}, headers=JSON_HEADERS)
        assert r.status_code == 200 and r.json()["seq"] == 1
        assert (await client.recv_json())["data"] == [{"id": "y"}]


async def test_source_publishing_unencodable_data_is_refused_logged_and_keeps_running(caplog: Any) -> None:
    errors: list[str] = []

    class Poisoner:
        topics = ("poison",)

        async def run(self, publisher: Any) -> None:
            for ident, value in (("bad-set", {1, 2}), ("bad-keys", {1: "a"}), ("bad-decimal", decimal.Decimal("2.5"))):
                try:
                    publisher.update("poison", [{"id": "fine"}, {"id": ident, "v": value}])
                except ValueError as exc:  # the documented refusal: the source catches it and goes on
                    errors.append(str(exc))
            publisher.update("poison", [{"id": "good"}])
            await trio.sleep_forever()

    caplog.set_level(logging.WARNING, logger="uipd.sources.publisher")
    async with running_daemon({"sources": {"rogue": {"plugin": "poisoner"}}}, plugins=(inline_plugin("poisoner", Poisoner),)) as daemon:
        async with api_client(daemon) as http:
            with trio.fail_after(5):
                while (await http.get("/api/stats")).json()["topics"]["poison"]["seq"] == 0:
                    await trio.sleep(0.01)
            stats = (await http.get("/api/stats")).json()
            assert stats["topics"]["poison"]["seq"] == 1 and stats["topics"]["poison"]["entities"] == 1
            assert stats["sources"]["rogue"] == {**stats["sources"]["rogue"], "running": True, "errors": 0, "refused": 3}
            client = await connect(daemon)  # a new client gets its SNAPSHOT: the daemon is fine
            await client.aclose()
    assert [e.split(" cannot")[0] for e in errors] == ["entity 1 (id 'bad-set')", "entity 1 (id 'bad-keys')", "entity 1 (id 'bad-decimal')"]
    # the first refusal is logged in full; the next ones within [log] repeat_interval are counted
    # (above) for a summary line (tests/sources/test_refusals.py)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "uipd.sources.publisher"]
    assert line.startswith("source rogue: publish to 'poison' refused") and "(id 'bad-set')" in line


async def test_a_source_that_mutates_what_it_published_and_replaces_gets_a_diff() -> None:
    cams = [{"id": "a", "status": "online"}, {"id": "b", "status": "online"}]
    step = trio.Event()

    class Mutator:
        topics = ("cams",)

        async def run(self, publisher: Any) -> None:
            publisher.replace("cams", cams)
            await step.wait()
            cams[1]["status"] = "offline"  # mutated in place, as a source keeping its own list would
            publisher.replace("cams", cams)
            await trio.sleep_forever()

    async with running_daemon({"sources": {"m": {"plugin": "mutator"}}}, plugins=(inline_plugin("mutator", Mutator),)) as daemon:
        async with api_client(daemon) as http:
            with trio.fail_after(5):
                while (await http.get("/api/stats")).json()["topics"]["cams"]["seq"] == 0:
                    await trio.sleep(0.01)
        client = await connect(daemon)
        step.set()
        update = await client.recv_json()
        assert update["type"] == "UPDATE" and update["topic"] == "cams" and update["seq"] == 2
        assert update["data"] == [{"id": "b", "status": "offline"}] and "removed" not in update
