"""The HTTP API as a small ASGI application.

The app knows the daemon only through :class:`ApiBackend`; a publish goes through the same
:class:`~uipd.sources.publisher.HubPublisher` path as a source's.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from uipd.core import publish
from uipd.core.errors import PublishError
from uipd.core.hub import PublishResult
from uipd.core.publish import Publication

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ApiBackend(Protocol):
    def publish(self, pub: Publication) -> PublishResult: ...

    def stats(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz."""


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class ApiApp:
    """Routes: /healthz, /readyz, GET /api/stats, POST /api/publish, POST /api/broadcast."""

    def __init__(self, backend: ApiBackend, *, key: str = "", max_body_bytes: int = 1024 * 1024) -> None:
        self.backend = backend
        self.key = key
        self.max_body_bytes = max_body_bytes
        self._routes: dict[str, tuple[str, Callable[[Scope, Receive], Awaitable[tuple[int, Any]]]]] = {
            "/healthz": ("GET", self._healthz),
            "/readyz": ("GET", self._readyz),
            "/api/stats": ("GET", self._stats),
            "/api/publish": ("POST", self._publish),
            "/api/broadcast": ("POST", self._broadcast),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers: tuple[tuple[bytes, bytes], ...] = ()
        try:
            status, body = await self._dispatch(scope, receive)
        except _Reject as rej:
            status, body, headers = rej.status, _error_body(rej.code, rej.message), rej.headers
        except PublishError as err:
            status, body = err.http_status, _error_body(err.error_code, err.message)
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload)), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            raise _Reject(404, "not_found", f"no such path: {path}")
        if path.startswith("/api/"):
            self._authorize(scope)
        method, handler = route
        if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
            raise _Reject(405, "method_not_allowed", f"use {method}", ((b"allow", method.encode()),))
        return await handler(scope, receive)

    def _authorize(self, scope: Scope) -> None:
        if not self.key:
            return
        expected = b"Bearer " + self.key.encode()
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(given, expected):
            raise _Reject(401, "unauthorized", "missing or wrong API key", ((b"www-authenticate", b"Bearer"),))

    async def _read_json(self, scope: Scope, receive: Receive) -> Any:
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise _Reject(413, "too_large", f"body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(400, "bad_request", "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Reject(413, "too_large", f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise _Reject(400, "bad_request", f"body is not valid JSON: {exc}") from None

    async def _healthz(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        return 200, {"ok": True}

    async def _readyz(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        ready, details = self.backend.readiness()
        return (200 if ready else 503), {"ready": ready, **details}

    async def _stats(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        return 200, self.backend.stats()

    async def _publish(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        pub = publish.from_api_body(await self._read_json(scope, receive), broadcast=False)
        result = self.backend.publish(pub)
        return 200, {"ok": True, "seq": result.seq, "recipients": result.recipients}

    async def _broadcast(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        pub = publish.from_api_body(await self._read_json(scope, receive), broadcast=True)
        result = self.backend.publish(pub)
        return 200, {"ok": True, "recipients": result.recipients}
