"""The NGSI-LD API calls this source makes, with httpx (on trio): paged entity listings and the
subscription used in push mode.  Every failure becomes one BrokerError with a short reason."""

from __future__ import annotations

import json
from typing import Any

import httpx
from attrs import define

from uipd_ngsi_ld.options import NgsiLdOptions

JSONLD_CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
ENTITIES = "/ngsi-ld/v1/entities"
SUBSCRIPTIONS = "/ngsi-ld/v1/subscriptions/"


class BrokerError(Exception):
    """A request to the broker failed; the message is what gets logged."""


def request_headers(options: NgsiLdOptions, *, body: bool = False) -> dict[str, str]:
    headers = {"accept": "application/json"}
    if body:
        headers["content-type"] = "application/json"
    if options.context:
        headers["link"] = f'<{options.context}>; rel="{JSONLD_CONTEXT_REL}"; type="application/ld+json"'
    if options.tenant:
        headers["ngsild-tenant"] = options.tenant
    if options.token:
        headers["authorization"] = f"Bearer {options.token}"
    return headers


def _query_options(options: NgsiLdOptions) -> str | None:
    wanted = (["keyValues"] if options.format == "keyValues" else []) + (["sysAttrs"] if options.sys_attrs else [])
    return ",".join(wanted) or None


@define
class Broker:
    client: httpx.AsyncClient
    options: NgsiLdOptions

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return await self.client.request(method, url, **kw)
        except httpx.TimeoutException:
            raise BrokerError(f"{method} {url}: timed out") from None
        except httpx.HTTPError as exc:
            raise BrokerError(f"{method} {url}: {type(exc).__name__}: {exc}") from None

    async def list_entities(self, entity_type: str) -> list[dict[str, Any]]:
        """Every entity of ``entity_type``: pages of ``limit`` by ``offset``, following the broker's
        ``Link: <...>; rel="next"`` when it sends one.  All or nothing: a failed page fails the
        listing, so a partial listing is never mistaken for deletions."""
        o = self.options
        base: dict[str, Any] = {"type": entity_type, "limit": o.page_size}
        if (query_options := _query_options(o)) is not None:
            base["options"] = query_options
        first = o.base_url.rstrip("/") + ENTITIES
        url, params = first, {**base, "offset": 0}
        entities: list[dict[str, Any]] = []
        follows_links = False
        while True:
            response = await self._send("GET", url, params=params, headers=request_headers(o))
            if response.status_code != 200:
                raise BrokerError(f"GET {ENTITIES}?type={entity_type}: HTTP {response.status_code}")
            try:
                # NaN and Infinity are let through: uipd refuses just the entities holding them
                page = response.json()
            except (ValueError, RecursionError):  # nested past the decoder: nothing of the page can be read
                raise BrokerError(f"GET {ENTITIES}?type={entity_type}: the answer is not JSON") from None
            if not isinstance(page, list):
                raise BrokerError(f"GET {ENTITIES}?type={entity_type}: expected an array of entities, got {type(page).__name__}")
            entities.extend(page)
            if len(entities) > o.max_entities:
                raise BrokerError(f"type {entity_type}: more than max_entities ({o.max_entities}) entities")
            next_link = response.links.get("next", {}).get("url")
            if next_link:
                # the link carries its own query; once a broker links its pages, no link means the end
                url, params, follows_links = str(response.url.join(next_link)), None, True
            elif page and len(page) >= o.page_size and not follows_links:
                url, params = first, {**base, "offset": len(entities)}
            else:
                return entities

    def subscription_body(self) -> dict[str, Any]:
        o = self.options
        endpoint: dict[str, Any] = {"uri": o.notify_url, "accept": "application/json"}
        if o.notify_headers:
            endpoint["receiverInfo"] = [{"key": k, "value": v} for k, v in o.notify_headers.items()]
        return {
            "type": "Subscription",
            "description": "uipd: " + ", ".join(f"{m.type} -> {m.topic}" for m in o.entities),
            "entities": [{"type": m.type} for m in o.entities],
            "notification": {"format": o.format, "endpoint": endpoint},
        }

    async def create_subscription(self) -> str:
        """POST the subscription; returns its URL (from ``Location``)."""
        url = self.options.base_url.rstrip("/") + SUBSCRIPTIONS
        body = json.dumps(self.subscription_body()).encode()
        response = await self._send("POST", url, content=body, headers=request_headers(self.options, body=True))
        if response.status_code != 201 or "location" not in response.headers:
            raise BrokerError(f"POST {SUBSCRIPTIONS}: HTTP {response.status_code} {response.text[:200]}")
        return str(response.url.join(response.headers["location"]))

    async def subscription_exists(self, location: str) -> bool:
        response = await self._send("GET", location, headers=request_headers(self.options))
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise BrokerError(f"GET {location}: HTTP {response.status_code}")
        return True

    async def delete_subscription(self, location: str) -> None:
        response = await self._send("DELETE", location, headers=request_headers(self.options))
        if response.status_code not in (204, 404):
            raise BrokerError(f"DELETE {location}: HTTP {response.status_code}")
