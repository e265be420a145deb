"""The dashboard's static files, shipped in the package (``uipd/api/static``)."""

from __future__ import annotations

import importlib.resources
from typing import Any

from uipd.api.errors import Reject, Scope
from uipd.api.guards import require_method

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


def static_file(scope: Scope, websocket: str = "") -> tuple[int, Any, bytes]:
    """The dashboard: ``/`` is ``static/index.html``; ``/static/NAME`` a file shipped in the package."""
    require_method(scope, "GET")
    name = "index.html" if scope["path"] == "/" else scope["path"].removeprefix("/static/")
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        raise Reject(404, "not_found", f"no such file: {name}")
    resource = _STATIC.joinpath(*name.split("/"))
    try:
        data = resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Reject(404, "not_found", f"no such file: {name}") from None
    if name == "index.html" and websocket:
        # tell the page where the WebSocket listener is (the page comes from the API port)
        data = data.replace(_WS_META, b'<meta name="uipd-ws" content="' + websocket.encode() + b'">', 1)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return 200, data, _CONTENT_TYPES.get(suffix, b"application/octet-stream")
