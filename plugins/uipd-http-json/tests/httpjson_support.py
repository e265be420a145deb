"""Test helpers for the http-json plugin (module name unique across plugins: pytest puts every
plugin's tests/ on sys.path): an ASGI app serving a JSON document with ETag/Last-Modified, for
``uipd.testing.serve_asgi``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import trio


class JsonServer:
    """An ASGI app serving one JSON document at any path, honouring conditional requests.

    ``validators`` picks what it sends: "etag", "last-modified" or both.  ``fail`` holds
    statuses to answer the next requests with; ``delay`` holds the answer back (for timeouts).
    """

    def __init__(self, document: Any, validators: tuple[str, ...] = ("etag", "last-modified")) -> None:
        self.validators = validators
        self.requests: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.fail: list[int] = []
        self.delay = 0.0
        self.raw: bytes | None = None
        self.version = 0
        self.set(document)

    def set(self, document: Any) -> None:
        self.body = json.dumps(document).encode()
        self.version += 1
        # one distinct HTTP date per version, so If-Modified-Since works without waiting a second
        self.last_modified = f"Tue, 09 Dec 2025 10:{self.version // 60:02d}:{self.version % 60:02d} GMT"

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(headers)
        if self.delay:
            await trio.sleep(self.delay)
        status, body, out = 200, self.raw if self.raw is not None else self.body, [(b"content-type", b"application/json")]
        if self.fail:
            status, body = self.fail.pop(0), b'{"error":"broken on purpose"}'
        elif headers.get("if-none-match") == self.etag and "etag" in self.validators:
            status, body = 304, b""
        elif headers.get("if-modified-since") == self.last_modified and "last-modified" in self.validators and "if-none-match" not in headers:
            status, body = 304, b""
        if "etag" in self.validators:
            out.append((b"etag", self.etag.encode()))
        if "last-modified" in self.validators:
            out.append((b"last-modified", self.last_modified.encode()))
        self.statuses.append(status)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})
