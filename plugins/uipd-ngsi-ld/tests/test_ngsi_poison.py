"""A listing (or a notification) holding entities uipd refuses: those are left out and reported,
the others published; the source is never restarted over them."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import trio
from ngsi_broker import FakeBroker, normalized_entities
from trio_websocket import open_websocket_url

import uipd_ngsi_ld.source
from uipd.plugin import HttpRequest
from uipd.testing import FakePublisher, run_daemon, serve_asgi
from uipd_ngsi_ld.alerts import AlertTracker
from uipd_ngsi_ld.options import EntityMapping, NgsiLdOptions
from uipd_ngsi_ld.plugin import create
from uipd_ngsi_ld.source import TopicState

POISON = {
    "urn:bad:nan": float("nan"),  # the fake broker writes NaN, as Python-based brokers do
    "urn:bad:huge": 2**70,
    "urn:bad:surrogate": "\ud800",  # a lone surrogate: no UTF-8 for it
    "urn:bad:deep": json.loads("[" * 300 + "]" * 300),
}
"""Entity id -> an attribute value uipd refuses (JSON parses it; uipd cannot encode it)."""


def poisoned_cameras() -> list[dict[str, Any]]:
    cameras = normalized_entities("cameras")
    bad = [{"id": ident, "type": "Camera", "speed": {"type": "Property", "value": value}} for ident, value in POISON.items()]
    odd = [
        {"id": "urn:odd:type", "type": "Camera", "speed": {"type": ["Property"], "value": 1}},  # an attribute type that is a list
        {"id": "", "type": "Camera"},  # no usable id: skipped as before
    ]
    return cameras[:200] + bad + cameras[200:] + odd


async def test_a_listing_with_poisoned_entities_publishes_the_others_without_restarting(caplog):
    caplog.set_level(logging.WARNING)
    broker = FakeBroker(poisoned_cameras())
    good = {ident for ident in broker.store if ident and ident not in POISON}
    async with serve_asgi(broker) as url:
        table = {"plugin": "ngsi-ld", "base_url": url, "interval": 0.05, "page_size": 1000, "entities": [{"type": "Camera", "topic": "cameras"}]}
        async with run_daemon({"server": {"topics": ["cameras"]}, "sources": {"ctx": table}}) as daemon:
            (cs,) = daemon.configured_sources
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}") as api:
                with trio.fail_after(5):
                    while (await api.get("/readyz")).status_code != 200:
                        await trio.sleep(0.02)
                    polls = cs.source.polls
                    while cs.source.polls < polls + 3:  # later polls leave the refused ones alone
                        await trio.sleep(0.02)
                stats = (await api.get("/api/stats")).json()
                metrics = (await api.get("/metrics")).text
            assert stats["sources"]["ctx"] == {**stats["sources"]["ctx"], "restarts": 0, "errors": 0, "running": True, "refused": 1}
            assert 'uipd_publishes_refused_total{reason="bad_request",source="ctx"} 1.0' in metrics
            assert cs.source.refused == len(POISON) and cs.source.skipped >= 1
            async with open_websocket_url(f"ws://127.0.0.1:{daemon.ws_port}/") as ws:
                await ws.get_message()
                snapshot = json.loads(await ws.get_message())
                assert {e["id"] for e in snapshot["data"]["cameras"]} == good
                # the bad entity mended at the broker arrives with the next poll
                broker.change("urn:bad:nan", speed=12.5)
                with trio.fail_after(5):
                    update = json.loads(await ws.get_message())
                assert update["type"] == "UPDATE" and update["data"] == [{"id": "urn:bad:nan", "type": "Camera", "speed": 12.5}]
    # the refusal: uipd's error line (the first of the batch), and the source's line naming all four
    uipd_lines = [r.getMessage() for r in caplog.records if r.name == "uipd.sources.publisher"]
    assert len(uipd_lines) == 1 and uipd_lines[0].startswith("source ctx: publish to 'cameras' refused: ")
    (source_line,) = [r.getMessage() for r in caplog.records if r.name == "uipd_ngsi_ld.source" and "left out" in r.getMessage()]
    assert "4 entities left out, the others published" in source_line and "and 1 more" in source_line
    assert not [r for r in caplog.records if r.name == "uipd.sources.supervisor" and r.levelno >= logging.ERROR]


def receiving_source() -> tuple[Any, FakePublisher]:
    """A source set up as run() sets it up, to drive with notifications."""
    source = create(NgsiLdOptions(base_url="http://127.0.0.1:9", entities=(EntityMapping("Camera", "cameras"),)))
    m = source.options.entities[0]
    source._states = {m.type: TopicState(m, AlertTracker(m.alerts))}
    pub = source._publisher = FakePublisher(source.topics)
    return source, pub


async def test_an_entity_the_mapping_cannot_read_is_left_out_alone(monkeypatch):
    real = uipd_ngsi_ld.source.to_uipd

    def to_uipd(entity, mapping, normalized):
        if entity["id"] == "c2":
            raise KeyError("an odd shape")
        return real(entity, mapping, normalized)

    monkeypatch.setattr(uipd_ngsi_ld.source, "to_uipd", to_uipd)
    source, pub = receiving_source()
    body = {"type": "Notification", "data": [{"id": c, "type": "Camera", "v": 1} for c in ("c1", "c2", "c3")]}
    answer = await source.notify(HttpRequest("POST", "notify", "", {}, json.dumps(body).encode()))
    assert answer.status == 400 and answer.body["changed"] == 2 and "'c2' cannot be mapped (KeyError" in answer.body["error"]
    assert sorted(pub.state["cameras"]) == ["c1", "c3"] and source.refused == 1


async def test_a_notification_with_one_bad_entity_publishes_the_others():
    source, pub = receiving_source()
    body = b'{"type":"Notification","data":[{"id":"c1","type":"Camera","v":1},{"id":"c2","type":"Camera","v":%d},{"id":"c3","type":"Camera"}]}' % 2**70
    answer = await source.notify(HttpRequest("POST", "notify", "", {}, body))
    assert answer.status == 400 and answer.body["changed"] == 2 and "entity 'c2'" in answer.body["error"]
    assert sorted(pub.state["cameras"]) == ["c1", "c3"] and len(pub.updates) == 1
