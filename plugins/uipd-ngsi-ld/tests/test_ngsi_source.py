"""The ngsi-ld source against a real local NGSI-LD broker serving the recorded HCMC entities."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import trio
from ngsi_broker import FakeBroker, normalized_entities, recorded
from trio_websocket import open_websocket_url

from uipd.plugin import HttpRequest
from uipd.testing import FakePublisher, free_port, run_daemon, serve_asgi
from uipd_ngsi_ld.alerts import AlertTracker
from uipd_ngsi_ld.options import AlertRule, EntityMapping, NgsiLdOptions
from uipd_ngsi_ld.plugin import create
from uipd_ngsi_ld.source import TopicState

CONTEXT = "https://example.org/hcmc-context.jsonld"


def source_for(url, *mappings, **kw):
    kw.setdefault("interval", 0.05)
    return create(NgsiLdOptions(base_url=url, entities=mappings or (EntityMapping("Camera", "cameras"),), **kw))


async def polls(source, n):
    with trio.fail_after(10):
        while source.polls < n:
            await trio.sleep(0.005)


@pytest.mark.parametrize(("form", "link_next"), [("keyValues", True), ("normalized", True), ("keyValues", False)])
async def test_pages_through_every_camera_with_headers_in_both_forms(nursery, form, link_next):
    broker = FakeBroker(normalized_entities("cameras"), link_next=link_next)
    async with serve_asgi(broker) as url:
        source = source_for(url, format=form, context=CONTEXT, tenant="hcmc", token="tok", page_size=100)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await polls(source, 1)
        nursery.cancel_scope.cancel()
    expected = {r["id"]: r for r in recorded("cameras")}
    assert pub.is_ready and len(pub.updates) == 1 and pub.state["cameras"] == expected
    first_poll = broker.entity_requests()[:7]
    assert [int(q["offset"]) for _, _, q, _ in first_poll] == [0, 100, 200, 300, 400, 500, 600]
    for _, _, query, headers in first_poll:
        assert query["type"] == "Camera" and query["limit"] == "100"
        assert set(query["options"].split(",")) == ({"keyValues", "sysAttrs"} if form == "keyValues" else {"sysAttrs"})
        assert headers["link"] == f'<{CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
        assert headers["ngsild-tenant"] == "hcmc" and headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize("sys_attrs", [True, False])
async def test_only_changes_and_deletions_are_published(nursery, sys_attrs):
    broker = FakeBroker(normalized_entities("cameras"))
    async with serve_asgi(broker) as url:
        source = source_for(url, sys_attrs=sys_attrs, page_size=500)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await polls(source, 2)
        assert len(pub.updates) == 1  # the second poll, nothing changed: nothing sent
        ids = sorted(broker.store)
        broker.change(ids[3], status="offline")
        n = source.polls
        await polls(source, n + 2)
        assert len(pub.updates) == 2
        topic, changed, removed = pub.updates[1]
        assert [e["id"] for e in changed] == [ids[3]] and changed[0]["status"] == "offline" and removed == []
        broker.delete(ids[0])
        broker.delete(ids[1])
        n = source.polls
        await polls(source, n + 2)
        assert pub.updates[2] == ("cameras", [], sorted(ids[:2])) and len(pub.updates) == 3
        assert len(pub.state["cameras"]) == len(ids) - 2
        nursery.cancel_scope.cancel()


async def test_alerts_only_when_an_entity_newly_matches(nursery):
    broker = FakeBroker(normalized_entities("airQuality"))
    rules = (AlertRule("aqi", ">", 150), AlertRule("level", "in", ["hazardous"]))
    async with serve_asgi(broker) as url:
        source = source_for(url, EntityMapping("AirQualityObserved", "airQuality", timestamp_field="dateObserved", alerts=rules), sys_attrs=False, page_size=1000)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await polls(source, 2)
        high = {r["id"] for r in recorded("airQuality") if r["aqi"] > 150}
        assert {a[1]["id"] for a in pub.alerts if a[1]["rule"] == "aqi > 150"} == high
        before = len(pub.alerts)
        low = next(r for r in recorded("airQuality") if r["aqi"] < 100)
        # a new observation: the timestamp field changes, so the entity is re-read
        broker.change(low["id"], aqi=190, dateObserved="2025-12-09T11:00:00Z")
        n = source.polls
        await polls(source, n + 2)
        assert len(pub.alerts) == before + 1
        alert = pub.alerts[-1][1]
        assert alert["id"] == low["id"] and alert["value"] == 190 and alert["entity"]["aqi"] == 190
        broker.change(low["id"], aqi=195, dateObserved="2025-12-09T11:05:00Z")  # still matching: no new alert
        n = source.polls
        await polls(source, n + 2)
        assert pub.state["airQuality"][low["id"]]["aqi"] == 195 and len(pub.alerts) == before + 1
        nursery.cancel_scope.cancel()


async def test_broker_errors_and_timeouts_are_retried_without_false_deletions(nursery, caplog):
    caplog.set_level(logging.INFO)
    broker = FakeBroker(normalized_entities("cameras"))
    broker.fail = [500, 500, "timeout"]
    async with serve_asgi(broker) as url:
        source = source_for(url, timeout=0.3, retry_min_backoff=0.02, retry_max_backoff=0.05, page_size=100)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await polls(source, 1)
        assert len(pub.state["cameras"]) == len(broker.store)
        messages = [r.getMessage() for r in caplog.records if r.name == "uipd_ngsi_ld.source"]
        assert sum("HTTP 500" in m for m in messages) == 1  # two failures, logged once
        assert sum("timed out" in m for m in messages) == 1
        assert any("recovered after 3 failed attempt(s)" in m for m in messages)
        # a listing that fails half-way must not be taken for 400 deletions
        broker.fail_after_pages = 3
        n = source.polls
        await polls(source, n + 1)
        assert all(removed == [] for _, _, removed in pub.updates)
        assert len(pub.state["cameras"]) == len(broker.store)
        nursery.cancel_scope.cancel()


async def test_a_notification_during_a_poll_is_not_overwritten_by_its_older_listing(nursery):
    broker = FakeBroker(normalized_entities("cameras")[:50])
    async with serve_asgi(broker) as url:
        source = source_for(url, interval=30.0, page_size=10)
        pub = FakePublisher(source.topics)
        ident = sorted(broker.store)[0]
        # the first page is answered slowly: a notification arrives while the poll is in flight
        broker.fail = []
        original = broker._answer

        async def slow(method, path, query, body):
            if path.endswith("/entities"):
                await trio.sleep(0.05)
            return await original(method, path, query, body)

        broker._answer = slow
        nursery.start_soon(source.run, pub)
        await trio.sleep(0.02)
        newer = {**broker.render(ident, True, True), "status": "maintenance", "modifiedAt": "2099-01-01T00:00:00.000Z"}
        answer = await source.notify(HttpRequest("POST", "notify", "", {}, json.dumps({"type": "Notification", "data": [newer]}).encode()))
        assert answer.status == 200
        await polls(source, 1)
        assert pub.state["cameras"][ident]["status"] == "maintenance" and len(pub.state["cameras"]) == 50
        nursery.cancel_scope.cancel()


async def test_notify_refuses_bad_requests():
    source = source_for("http://127.0.0.1:9")
    req = lambda method, body: HttpRequest(method, "notify", "", {}, body)  # noqa: E731
    assert (await source.notify(req("POST", b"{}"))).status == 503  # not running yet
    source._publisher = FakePublisher(source.topics)
    assert (await source.notify(req("GET", b""))).status == 405
    assert (await source.notify(req("POST", b"not json"))).status == 400
    assert (await source.notify(req("POST", b'{"type":"Notification"}'))).status == 400
    ok = await source.notify(req("POST", b'{"type":"Notification","data":[{"id":"x","type":"Other"},{"type":"Camera"}]}'))
    assert ok.status == 200 and ok.body["changed"] == 0 and source.skipped == 2


async def test_notify_refuses_poison_data_with_a_400_and_publishes_nothing():
    source = source_for("http://127.0.0.1:9")
    m = source.options.entities[0]
    source._states = {m.type: TopicState(m, AlertTracker(m.alerts))}  # as run() makes them
    pub = source._publisher = FakePublisher(source.topics)
    note = lambda body: source.notify(HttpRequest("POST", "notify", "", {}, body))  # noqa: E731
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (
        b'{"type":"Notification","data":[{"id":"c1","type":"Camera","v":NaN}]}',  # Python's json accepts NaN
        b'{"type":"Notification","data":[{"id":"c1","type":"Camera","v":' + deep + b"}]}",  # RecursionError
    ):
        assert (await note(body)).status == 400
    # uipd's own refusal (nested past what JSON encoding allows; an int beyond 64 bits) is a 400 too
    for value in ("[" * 300 + "]" * 300, str(2**70)):
        answer = await note(b'{"type":"Notification","data":[{"id":"c1","type":"Camera","v":%s}]}' % value.encode())
        assert answer.status == 400 and "c1" in answer.body["error"]
    # an unhashable type is skipped like an unknown one, not a 500
    answer = await note(b'{"type":"Notification","data":[{"id":"c1","type":["Camera"]}]}')
    assert answer.status == 200 and answer.body["changed"] == 0
    assert pub.updates == [] and pub.state["cameras"] == {}
    good = await note(b'{"type":"Notification","data":[{"id":"c1","type":"Camera","v":1}]}')
    assert good.status == 200 and good.body["changed"] == 1 and list(pub.state["cameras"]) == ["c1"]


async def test_push_notifications_reach_clients_of_a_running_daemon():
    broker = FakeBroker(normalized_entities("cameras"))
    api_port = free_port()
    async with serve_asgi(broker) as url:
        table = {
            "plugin": "ngsi-ld", "base_url": url, "format": "normalized", "push": True, "interval": 60.0, "page_size": 1000,
            "notify_url": f"http://127.0.0.1:{api_port}/sources/ctx/notify", "notify_headers": {"Authorization": "Bearer k"},
            "entities": [{"type": "Camera", "topic": "cameras", "fields": {"label": "cameraName"}}],
        }
        async with run_daemon({"api": {"port": api_port, "key": "k"}, "sources": {"ctx": table}}) as daemon:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as api:
                with trio.fail_after(10):
                    while (await api.get("/readyz")).status_code != 200:
                        await trio.sleep(0.02)
            (sid, sub), = broker.subscriptions.items()
            assert sub["entities"] == [{"type": "Camera"}] and sub["notification"]["format"] == "normalized"
            assert sub["notification"]["endpoint"]["uri"] == table["notify_url"]
            async with open_websocket_url(f"ws://127.0.0.1:{daemon.ws_port}/") as ws:
                await ws.get_message()
                snapshot = json.loads(await ws.get_message())
                assert len(snapshot["data"]["cameras"]) == len(broker.store)
                ident = sorted(broker.store)[5]
                broker.change(ident, status="offline")
                (answer,) = await broker.push(ident)
                assert answer.status_code == 200, answer.text
                with trio.fail_after(5):
                    update = json.loads(await ws.get_message())
                assert update["type"] == "UPDATE" and [e["id"] for e in update["data"]] == [ident]
                assert update["data"][0]["status"] == "offline" and "label" in update["data"][0]
        # on shutdown the source removed its subscription from the broker
        assert broker.subscriptions == {} and broker.deleted_subscriptions == [sid]
