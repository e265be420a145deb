"""The HTTP API as a small ASGI application.

The app knows the daemon only through :class:`ApiBackend`; a publish goes through the same
:class:`~uipd.sources.publisher.HubPublisher` path as a source's.
"""

from __future__ import annotations

import hmac
import importlib.resources
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import trio

from uipd.core import publish
from uipd.core.errors import PublishError
from uipd.core.hub import PublishResult
from uipd.core.publish import Publication
from uipd.plugin import HttpHandler, HttpRequest, HttpResponse

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ApiBackend(Protocol):
    async def publish(self, pub: Publication) -> PublishResult: ...

    def source_route(self, source: str, route: str) -> HttpHandler | None:
        """The handler a source registered for ``/sources/SOURCE/ROUTE``, if any."""

    def websocket_endpoint(self) -> str:
        """``"SCHEME PORT PATH"`` of the WebSocket listener, for the dashboard (e.g. ``"ws 5000 /"``)."""

    def stats(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz."""


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


_STATIC = importlib.resources.files("uipd.api") / "static"
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".json": b"application/json",
    ".ico": b"image/x-icon",
}


_WS_META = b'<meta name="uipd-ws" content="">'

_JSON_CONTENT_TYPE = re.compile(rb"application/json\s*(;\s*charset=\"?utf-8\"?\s*)?", re.IGNORECASE)
_SAFE_METHODS = ("GET", "HEAD")


def cross_site(scope: Scope, allowed_origins: tuple[str, ...]) -> bool:
    """Whether a request comes from a web page of another origin (a browser's cross-site request).

    A browser sends ``Origin`` with every POST and every CORS request: it must be the API's own
    origin (``scheme://`` plus the request's ``Host``: the dashboard's page) or a listed one; every
    ``Origin`` header counts when there are several.  Without ``Origin`` (curl, the CLI, Prometheus,
    a broker's notifications), ``Sec-Fetch-Site`` is the other browser signal: a request that may
    change something is refused when it says the page was of another origin.  A GET navigation
    from a link on another site (no ``Origin``) still opens the dashboard.
    """
    headers = scope["headers"]
    origins = [v.decode("latin-1").lower().rstrip("/") for k, v in headers if k == b"origin"]
    if origins:
        host = next((v.decode("latin-1").lower() for k, v in headers if k == b"host"), None)
        accepted = {o.lower().rstrip("/") for o in allowed_origins}
        if host is not None:
            accepted.add(f"{scope.get('scheme', 'http')}://{host}")
        return any(o not in accepted for o in origins)
    if scope["method"] in _SAFE_METHODS:
        return False
    site = next((v for k, v in headers if k == b"sec-fetch-site"), None)
    return site is not None and site.lower() not in (b"same-origin", b"none")


def _static_file(scope: Scope, websocket: str = "") -> tuple[int, Any, bytes]:
    """The dashboard: ``/`` is ``static/index.html``; ``/static/NAME`` a file shipped in the package."""
    if scope["method"] not in ("GET", "HEAD"):
        raise _Reject(405, "method_not_allowed", "use GET", ((b"allow", b"GET"),))
    name = "index.html" if scope["path"] == "/" else scope["path"].removeprefix("/static/")
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        raise _Reject(404, "not_found", f"no such file: {name}")
    resource = _STATIC.joinpath(*name.split("/"))
    try:
        data = resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise _Reject(404, "not_found", f"no such file: {name}") from None
    if name == "index.html" and websocket:
        # tell the page where the WebSocket listener is (the page comes from the API port)
        data = data.replace(_WS_META, b'<meta name="uipd-ws" content="' + websocket.encode() + b'">', 1)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return 200, data, _CONTENT_TYPES.get(suffix, b"application/octet-stream")


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
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        """``GET /metrics``: returns the Prometheus exposition and its content type (no API key needed,
        like /healthz: the listener is internal)."""
        self.key = key
        self.max_body_bytes = max_body_bytes
        self.dashboard = dashboard
        self.allowed_origins = allowed_origins
        """Browser origins allowed besides the API's own (see :func:`cross_site`)."""
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
            if cross_site(scope, self.allowed_origins):
                raise _Reject(403, "forbidden_origin", "cross-site requests are refused (add the origin to [api] allowed_origins)")
            if scope["path"].startswith("/sources/"):
                status, body, content_type = await self._source_route(scope, receive)
            elif scope["path"] == "/metrics" and self.metrics is not None:
                status, body, content_type = self._metrics(scope)
            elif self.dashboard and (scope["path"] == "/" or scope["path"].startswith("/static/")):
                endpoint = getattr(self.backend, "websocket_endpoint", None)
                status, body, content_type = _static_file(scope, endpoint() if endpoint is not None else "")
            else:
                status, body = await self._dispatch(scope, receive)
        except _Reject as rej:
            status, body, headers = rej.status, _error_body(rej.code, rej.message), rej.headers
        except PublishError as err:
            status, body = err.http_status, _error_body(err.error_code, err.message)
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
            raise _Reject(404, "not_found", f"no such path: {scope['path']}")
        self._authorize(scope)
        request = HttpRequest(
            method=scope["method"],
            route=route,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=await self._read_body(scope, receive),
        )
        try:
            response = await handler(request)
            if not isinstance(response, HttpResponse):
                raise TypeError(f"the handler returned {type(response).__name__}, not HttpResponse")
        except Exception:
            log.exception("source %s: handler for %s failed", source, route)
            raise _Reject(500, "source_error", f"source {source} failed to handle the request") from None
        return response.status, response.body, response.content_type.encode("latin-1")

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
        # A browser sends text/plain, form or multipart bodies cross-site without a CORS preflight;
        # application/json needs one (which this API never grants), so only JSON is read.
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        if not _JSON_CONTENT_TYPE.fullmatch(content_type):
            raise _Reject(415, "unsupported_media_type", "send the body as Content-Type: application/json")
        body = await self._read_body(scope, receive)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _Reject(400, "bad_request", f"body is not valid JSON: {exc}") from None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise _Reject(413, "too_large", f"body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        # One deadline for the whole body: hypercorn bounds only the gap between reads, which a
        # client trickling a byte at a time never hits.
        with trio.move_on_after(self.request_timeout):
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
                    return b"".join(chunks)
        # the unread rest of the body makes hypercorn close the connection after this answer
        raise _Reject(408, "request_timeout", f"the body did not arrive within {self.request_timeout:g} s", ((b"connection", b"close"),))

    def _metrics(self, scope: Scope) -> tuple[int, Any, bytes]:
        if scope["method"] not in ("GET", "HEAD"):
            raise _Reject(405, "method_not_allowed", "use GET", ((b"allow", b"GET"),))
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
