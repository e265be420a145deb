"""The HTTP API as a small ASGI application.

The app knows the daemon only through :class:`ApiBackend`; a publish goes through the same
:class:`~uipd.sources.publisher.HubPublisher` path as a source's.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from uipd.api.errors import Gone, Receive, Reject, Scope, Send, error_body
from uipd.api.guards import authorize, cross_site, framed_twice, known_host, read_body, read_json, require_method
from uipd.api.static_files import static_file
from uipd.core import publish
from uipd.core.errors import PublishError
from uipd.core.hub import PublishResult
from uipd.core.publish import Publication
from uipd.plugin import HttpHandler, HttpRequest, HttpResponse

log = logging.getLogger(__name__)


class ApiBackend(Protocol):
    async def publish(self, pub: Publication) -> PublishResult: ...

    def source_route(self, source: str, route: str) -> HttpHandler | None:
        """The handler a source registered for ``/sources/SOURCE/ROUTE``, if any."""

    def websocket_endpoint(self) -> str:
        """``"SCHEME PORT PATH"`` of the WebSocket listener, for the dashboard (e.g. ``"ws 5000 /"``)."""

    def stats(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz."""


class ApiApp:
    """Routes: /healthz, /readyz, GET /api/stats, POST /api/publish, POST /api/broadcast."""

    def __init__(
        self,
        backend: ApiBackend,
        *,
        key: str = "",
        max_body_bytes: int = 1024 * 1024,
        dashboard: bool = True,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        allowed_origins: tuple[str, ...] = (),
        request_timeout: float = 5.0,
        host: str = "",
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        """``GET /metrics``: returns the Prometheus exposition and its content type (no API key needed,
        like /healthz: the listener is internal)."""
        self.key = key
        self.max_body_bytes = max_body_bytes
        self.dashboard = dashboard
        self.allowed_origins = allowed_origins
        """Browser origins allowed besides the API's own (see :func:`~uipd.api.guards.cross_site`)."""
        self.host = host
        """The listen address (``[api] host``): a ``Host`` naming it names this listener."""
        self.allowed_hosts = allowed_hosts
        """Further names a request's ``Host`` may carry (see :func:`~uipd.api.guards.known_host`)."""
        self._hostname = socket.gethostname()
        self.request_timeout = request_timeout
        """Seconds from a request's head to the end of its body (the head itself is bounded by
        hypercorn's idle timeout, see :mod:`uipd.api.server`)."""
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
        content_type = b"application/json"
        try:
            if framed_twice(scope):
                raise Reject(400, "bad_request", "a request may not have both Content-Length and Transfer-Encoding", ((b"connection", b"close"),))
            names = tuple(n for n in (self.host, self._hostname, *self.allowed_hosts) if n)
            if not known_host(scope, names):
                raise Reject(421, "unknown_host", "the Host header does not name this server (add the name to [api] allowed_hosts)")
            if cross_site(scope, self.allowed_origins):
                raise Reject(403, "forbidden_origin", "cross-site requests are refused (add the origin to [api] allowed_origins)")
            if scope["path"].startswith("/sources/"):
                status, body, content_type = await self._source_route(scope, receive)
            elif scope["path"] == "/metrics" and self.metrics is not None:
                status, body, content_type = self._metrics(scope)
            elif self.dashboard and (scope["path"] == "/" or scope["path"].startswith("/static/")):
                endpoint = getattr(self.backend, "websocket_endpoint", None)
                status, body, content_type = static_file(scope, endpoint() if endpoint is not None else "")
            else:
                status, body = await self._dispatch(scope, receive)
        except Gone:
            return
        except Reject as rej:
            status, body, headers = rej.status, error_body(rej.code, rej.message), rej.headers
        except PublishError as err:
            status, body = err.http_status, error_body(err.error_code, err.message)
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(payload)), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _source_route(self, scope: Scope, receive: Receive) -> tuple[int, Any, bytes]:
        _, _, rest = scope["path"].partition("/sources/")
        source, _, route = rest.partition("/")
        handler = self.backend.source_route(source, route)
        if handler is None:
            raise Reject(404, "not_found", f"no such path: {scope['path']}")
        authorize(scope, self.key)
        request = HttpRequest(
            method=scope["method"],
            route=route,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=await read_body(scope, receive, max_bytes=self.max_body_bytes, timeout=self.request_timeout),
        )
        try:
            response = await handler(request)
            if not isinstance(response, HttpResponse):
                raise TypeError(f"the handler returned {type(response).__name__}, not HttpResponse")
        except Exception:
            log.exception("source %s: handler for %s failed", source, route)
            raise Reject(500, "source_error", f"source {source} failed to handle the request") from None
        return response.status, response.body, response.content_type.encode("latin-1")

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            raise Reject(404, "not_found", f"no such path: {path}")
        if path.startswith("/api/"):
            authorize(scope, self.key)
        method, handler = route
        require_method(scope, method)
        return await handler(scope, receive)

    async def _read_json(self, scope: Scope, receive: Receive) -> Any:
        return await read_json(scope, receive, max_bytes=self.max_body_bytes, timeout=self.request_timeout)

    def _metrics(self, scope: Scope) -> tuple[int, Any, bytes]:
        require_method(scope, "GET")
        assert self.metrics is not None
        body, content_type = self.metrics()
        return 200, body, content_type.encode("latin-1")

    async def _healthz(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        return 200, {"ok": True}

    async def _readyz(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        ready, details = self.backend.readiness()
        return (200 if ready else 503), {"ready": ready, **details}

    async def _stats(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        return 200, self.backend.stats()

    async def _publish(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        pub = publish.from_api_body(await self._read_json(scope, receive), broadcast=False)
        result = await self.backend.publish(pub)
        return 200, {"ok": True, "seq": result.seq, "recipients": result.recipients}

    async def _broadcast(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        pub = publish.from_api_body(await self._read_json(scope, receive), broadcast=True)
        result = await self.backend.publish(pub)
        return 200, {"ok": True, "recipients": result.recipients}
