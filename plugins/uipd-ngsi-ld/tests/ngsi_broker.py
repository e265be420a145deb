"""A small NGSI-LD context broker for the tests (an ASGI app served by hypercorn), and the fixture
builder that turns the recorded HCMC snapshot (../shared/bench/data, read at test time, never
copied) into NGSI-LD entities in the normalized form; the broker derives keyValues itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import trio

SNAPSHOT = Path(__file__).resolve().parents[3].parent / "shared" / "bench" / "data" / "hcmc-snapshot.json"

NGSI_TYPES = {"cameras": "Camera", "airQuality": "AirQualityObserved", "accidents": "Accident"}
"""Recorded topic -> the NGSI-LD type its entities are served as."""
TYPE_ATTRIBUTE = {"Accident": "accidentType"}
"""``type`` is reserved in NGSI-LD: a record's own ``type`` field is served under this name."""
RELATIONSHIPS = {"cameraId", "affectedCamera", "roadSegment"}


def recorded(topic: str) -> list[dict[str, Any]]:
    """The recorded entities of ``topic`` (uipd shape), without null fields (NGSI-LD has no null)."""
    if not SNAPSHOT.exists():
        pytest.skip(f"{SNAPSHOT} is not beside this checkout (../shared/bench/data)")
    records = json.loads(SNAPSHOT.read_text(encoding="utf-8"))[topic]
    return [{k: v for k, v in r.items() if v is not None} for r in records]


def to_normalized(record: dict[str, Any], ngsi_type: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": record["id"], "type": ngsi_type}
    for name, value in record.items():
        if name == "id" or (name == "type" and value == ngsi_type):
            continue
        if name == "type":
            name = TYPE_ATTRIBUTE[ngsi_type]
        if name == "location" and isinstance(value, dict) and {"lat", "lng"} <= value.keys():
            entity[name] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [value["lng"], value["lat"]]}}
        elif name in RELATIONSHIPS and isinstance(value, str):
            entity[name] = {"type": "Relationship", "object": value}
        else:
            entity[name] = {"type": "Property", "value": value}
    return entity


def normalized_entities(topic: str) -> list[dict[str, Any]]:
    return [to_normalized(r, NGSI_TYPES[topic]) for r in recorded(topic)]


def to_key_values(entity: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, attribute in entity.items():
        if isinstance(attribute, dict) and attribute.get("type") == "Relationship":
            out[name] = attribute["object"]
        elif isinstance(attribute, dict) and attribute.get("type") in ("Property", "GeoProperty"):
            out[name] = attribute["value"]
        else:
            out[name] = attribute
    return out


class FakeBroker:
    """Serves ``GET /ngsi-ld/v1/entities`` (type, limit, offset, options=keyValues,sysAttrs; a
    ``Link rel="next"`` header when ``link_next``), subscriptions (POST/GET/DELETE), and pushes
    notifications to subscribers on ``push``.  ``fail`` holds statuses (or ``"timeout"``) for the
    next entity requests; every request is recorded."""

    def __init__(self, entities: list[dict[str, Any]], *, link_next: bool = True) -> None:
        self.store = {e["id"]: e for e in entities}
        self.clock = datetime(2025, 12, 9, 10, 0, tzinfo=UTC)
        self.modified = {ident: self._tick() for ident in self.store}
        self.link_next = link_next
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.fail: list[int | str] = []
        self.fail_after_pages: int | None = None
        """Fail the listing request after this many pages were served (then reset)."""
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.deleted_subscriptions: list[str] = []

    def _tick(self) -> str:
        self.clock += timedelta(milliseconds=1)
        return self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def change(self, ident: str, **values: Any) -> None:
        for name, value in values.items():
            self.store[ident][name] = {"type": "Property", "value": value}
        self.modified[ident] = self._tick()

    def delete(self, ident: str) -> None:
        del self.store[ident], self.modified[ident]

    def entity_requests(self) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
        return [r for r in self.requests if r[1] == "/ngsi-ld/v1/entities"]

    def render(self, ident: str, key_values: bool, sys_attrs: bool) -> dict[str, Any]:
        entity = dict(self.store[ident])
        if key_values:
            entity = to_key_values(entity)
        if sys_attrs:
            entity["modifiedAt"] = self.modified[ident]
        return entity

    async def push(self, *idents: str) -> list[httpx.Response]:
        """Notify every subscription watching these entities' types, as a broker does on change."""
        answers = []
        async with httpx.AsyncClient(timeout=5) as client:
            for sid, sub in self.subscriptions.items():
                types = {e["type"] for e in sub["entities"]}
                data = [self.render(i, sub["notification"]["format"] == "keyValues", True) for i in idents if self.store[i]["type"] in types]
                endpoint = sub["notification"]["endpoint"]
                headers = {h["key"]: h["value"] for h in endpoint.get("receiverInfo", [])}
                body = {"id": f"urn:ngsi-ld:Notification:{len(answers)}", "type": "Notification", "subscriptionId": sid, "data": data}
                answers.append(await client.post(endpoint["uri"], json=body, headers=headers))
        return answers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        query = dict(parse_qsl(scope["query_string"].decode()))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((method, path, query, headers))
        status, payload, extra = await self._answer(method, path, query, body)
        out = [(b"content-type", b"application/json"), *[(k.encode(), v.encode()) for k, v in extra.items()]]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if payload is None else json.dumps(payload).encode()})

    async def _answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        if path == "/ngsi-ld/v1/entities" and method == "GET":
            if self.fail:
                failure = self.fail.pop(0)
                if failure == "timeout":
                    await trio.sleep(30)  # longer than any client timeout in the tests
                    return 504, None, {}
                return int(failure), {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": "broken on purpose"}, {}
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
            if self.fail_after_pages is not None and offset >= self.fail_after_pages * limit:
                self.fail_after_pages = None
                return 503, {"title": "overloaded"}, {}
            options = set(query.get("options", "").split(","))
            ids = sorted(i for i, e in self.store.items() if e["type"] == query.get("type"))
            page = [self.render(i, "keyValues" in options, "sysAttrs" in options) for i in ids[offset : offset + limit]]
            extra = {}
            if self.link_next and offset + limit < len(ids):
                extra["link"] = f'</ngsi-ld/v1/entities?{urlencode({**query, "offset": offset + limit})}>; rel="next"'
            return 200, page, extra
        if path == "/ngsi-ld/v1/subscriptions/" and method == "POST":
            sub = json.loads(body)
            sid = f"urn:ngsi-ld:Subscription:{len(self.subscriptions) + len(self.deleted_subscriptions) + 1}"
            self.subscriptions[sid] = sub
            return 201, None, {"location": f"/ngsi-ld/v1/subscriptions/{sid}"}
        if path.startswith("/ngsi-ld/v1/subscriptions/"):
            sid = path.rsplit("/", 1)[1]
            if sid not in self.subscriptions:
                return 404, {"title": "no such subscription"}, {}
            if method == "DELETE":
                del self.subscriptions[sid]
                self.deleted_subscriptions.append(sid)
                return 204, None, {}
            return 200, {"id": sid, **self.subscriptions[sid]}, {}
        return 404, {"title": "not found"}, {}
