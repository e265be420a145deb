"""One conditional GET of a JSON document with httpx (which runs on trio)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
from attrs import define, frozen


class FetchError(Exception):
    """A poll failed: the message says why in a few words (it is what gets logged)."""


@frozen
class Fetched:
    """The result of one GET: ``document`` is None when the server answered 304 Not Modified."""

    document: Any
    not_modified: bool = False


@define
class ConditionalFetcher:
    """GETs one URL, remembering its validators (ETag, Last-Modified) for the next request."""

    url: str
    headers: Mapping[str, str]
    max_bytes: int
    conditional: bool = True
    etag: str | None = None
    last_modified: str | None = None

    def request_headers(self) -> dict[str, str]:
        headers = {"accept": "application/json", **self.headers}
        if self.conditional:
            if self.etag is not None:
                headers["if-none-match"] = self.etag
            if self.last_modified is not None:
                headers["if-modified-since"] = self.last_modified
        return headers

    async def fetch(self, client: httpx.AsyncClient) -> Fetched:
        try:
            async with client.stream("GET", self.url, headers=self.request_headers()) as response:
                if response.status_code == 304:
                    return Fetched(None, not_modified=True)
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(f"response larger than max_bytes ({self.max_bytes})")
                etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
        except httpx.TimeoutException:
            raise FetchError("timed out") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"request failed ({type(exc).__name__}: {exc})") from None
        try:
            # NaN and Infinity are let through: uipd refuses just the items holding them
            document = json.loads(body)
        except ValueError as exc:
            raise FetchError(f"not JSON ({exc})") from None
        except RecursionError:  # nested past the decoder: nothing of the document can be read
            raise FetchError("not JSON (nested too deep)") from None
        # Remember the validators only once the body parsed: a broken body must be fetched again.
        self.etag, self.last_modified = etag, last_modified
        return Fetched(document)
