"""The checks every request passes before a route reads it: framing, ``Host``, ``Origin``, the
method, the API key, and the body (its size, its content type, its deadline, its JSON).  Each
refuses with :class:`~uipd.api.errors.Reject`."""

from __future__ import annotations

import hmac
import ipaddress
import re
from typing import Any

import orjson
import trio

from uipd.api.errors import Gone, Receive, Reject, Scope
from uipd.plugin_tools import parse_json
from uipd.server.clock import spread

_JSON_CONTENT_TYPE = re.compile(rb"application/json\s*(;\s*charset=\"?utf-8\"?\s*)?", re.IGNORECASE)
_SAFE_METHODS = ("GET", "HEAD")
_LONG_DIGITS = re.compile(rb"\d{19}")
"""The shortest integer orjson reads as a float (below -2**63) has 19 digits."""


def framed_twice(scope: Scope) -> bool:
    """A request with both ``Content-Length`` and ``Transfer-Encoding``: h11 reads the body as
    chunked, but a proxy in front may have framed it by the length, and the rest would be read
    here as the next request (request smuggling).  RFC 9112 6.1: such a request may be refused
    and the connection must be closed after the answer."""
    names = {k for k, _ in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: no port, lower case, no trailing dot; an IPv6 literal keeps its brackets."""
    host = host.strip().lower()
    name = host[: host.find("]") + 1] if host.startswith("[") else host.rpartition(":")[0] or host
    return name.rstrip(".")


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def known_host(scope: Scope, names: tuple[str, ...]) -> bool:
    """Whether every ``Host`` header of a request names this listener (against DNS rebinding: a
    page on ``evil.example``, its name then resolved to this machine, sends ``Host`` and ``Origin``
    of ``evil.example`` and so passes :func:`cross_site`).  An IP address always does (no rebinding
    without a name an attacker controls), so do ``localhost`` and ``names`` (compared as
    :func:`_host_name` reads them: case, a trailing dot); no ``Host`` (HTTP/1.0, never a browser)
    does too."""
    for key, value in scope["headers"]:
        if key == b"host":
            name = _host_name(value.decode("latin-1"))
            if not name or not (name == "localhost" or any(name == _host_name(n) for n in names) or _ip_literal(name)):
                return False
    return True


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


def require_method(scope: Scope, method: str) -> None:
    """405 unless the request's method is ``method`` (HEAD counts as GET)."""
    if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
        raise Reject(405, "method_not_allowed", f"use {method}", ((b"allow", method.encode()),))


def authorize(scope: Scope, key: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <key>`` (any request when ``key`` is empty)."""
    if not key:
        return
    expected = b"Bearer " + key.encode()
    given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    if not hmac.compare_digest(given, expected):
        raise Reject(401, "unauthorized", "missing or wrong API key", ((b"www-authenticate", b"Bearer"),))


async def read_body(scope: Scope, receive: Receive, *, max_bytes: int, timeout: float) -> bytes:
    """The request's body: 413 past ``max_bytes``, 408 when it takes longer than ``timeout``."""
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise Reject(413, "too_large", f"body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    # One deadline for the whole body: hypercorn bounds only the gap between reads, which a
    # client trickling a byte at a time never hits.  Spread: requests sent together do not all
    # get their 408 (and reconnect) in the same instant.
    with trio.move_on_after(spread(timeout)):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise Reject(413, "too_large", f"body over {max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    # the unread rest of the body makes hypercorn close the connection after this answer
    raise Reject(408, "request_timeout", f"the body did not arrive within {timeout:g} s", ((b"connection", b"close"),))


def _loads_body(body: bytes) -> Any:
    """An API body decoded.  orjson reads an integer beyond 64 bits as a float, silently (2**64
    would be published as 1.8446744073709552e19); a body with a run of 19 digits or more is read
    by Python's decoder instead, whose exact integers the publish refuses as it refuses a
    source's, naming the entity.  Raises ``ValueError`` for what is not JSON."""
    if _LONG_DIGITS.search(body) is None:
        return orjson.loads(body)
    return parse_json(body.decode("utf-8"))  # str: bytes would let Python guess UTF-16 or -32


async def read_json(scope: Scope, receive: Receive, *, max_bytes: int, timeout: float) -> Any:
    """The request's body as JSON (:func:`read_body`'s limits); 415 for another content type."""
    # A browser sends text/plain, form or multipart bodies cross-site without a CORS preflight;
    # application/json needs one (which this API never grants), so only JSON is read.
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    if not _JSON_CONTENT_TYPE.fullmatch(content_type):
        raise Reject(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    body = await read_body(scope, receive, max_bytes=max_bytes, timeout=timeout)
    try:
        return _loads_body(body)
    except ValueError as exc:
        raise Reject(400, "bad_request", f"body is not valid JSON: {exc}") from None
