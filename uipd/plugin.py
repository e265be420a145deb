"""What a source plugin may use: the hook marker, the SourceType it returns, and the
Publisher and Source protocols.  A plugin imports this module and nothing else from uipd, except
the helpers in :mod:`uipd.plugin_tools` (option validators, ``Backoff``, ``HealthLog``) and, in its
tests, :mod:`uipd.testing` (``FakePublisher``, ``run_daemon``, ``serve_asgi``).

A minimal plugin::

    from attrs import frozen
    from uipd.plugin import SourceType, hookimpl

    @frozen
    class Options:
        interval: float = 5.0

    class Clock:
        topics = ("clock",)
        def __init__(self, options): self.options = options
        async def run(self, publisher):
            publisher.ready()
            n = 0
            while True:
                n += 1
                publisher.update("clock", [{"id": "tick", "n": n}])
                await trio.sleep(self.options.interval)

    @hookimpl
    def uipd_source_types():
        return [SourceType("clock", Options, Clock, "a counter every few seconds")]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import pluggy
from attrs import frozen

hookimpl = pluggy.HookimplMarker("uipd")


class Publisher(Protocol):
    """Handed by the daemon to a running source; every call publishes synchronously.

    A publication goes through exactly the same path as one from the HTTP API: it is
    validated (a bad one raises ``ValueError`` and publishes nothing), applied to the
    topic's state, and delivered to the topic's subscribers.  A source may publish only to
    the topics it declared.
    """

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int | None:
        """Upsert ``entities`` (whole-entity replace, keyed by ``id``) and delete ``removed``; returns
        the seq, or None in a cluster (Redis broker), where Redis assigns it a moment later."""

    def alert(self, topic: str, data: Any) -> int | None:
        """Send an ALERT (no change of state); returns the seq (None in a cluster)."""

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        """Make ``entities`` the topic's whole state: publishes one UPDATE with only the entities
        that changed and the ids that went away; returns its seq, or None when nothing changed."""

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        """The topic's current entities by string id (read-only)."""

    def ready(self) -> None:
        """Tell the daemon this source has loaded its initial state (``/readyz``); publishing anything does too."""


class Source(Protocol):
    """One configured source: the topics it serves and the task that feeds them."""

    topics: Sequence[str]
    """The topics this source provides; known before ``run`` starts (they are offered to clients)."""

    async def run(self, publisher: Publisher) -> None:
        """Feed the topics until cancelled.  If it raises, the daemon logs the error and calls
        ``run`` again after a backoff; state already published stays."""


@frozen
class HttpRequest:
    """A request to a source's own route on the API listener (``/sources/NAME/ROUTE``)."""

    method: str
    route: str
    """The part of the path after ``/sources/NAME/``."""
    query: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


@frozen
class HttpResponse:
    status: int = 200
    body: Any = None
    """JSON-encodable (sent as application/json) or bytes (sent as ``content_type``)."""
    content_type: str = "application/json"


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class ReceivesHttp(Protocol):
    """Optional for a Source: routes it serves on the daemon's HTTP API listener, e.g. to receive
    pushed notifications.  ``http_routes()`` is called once, before ``run``; a route ``"notify"``
    of source ``NAME`` is served at ``/sources/NAME/notify`` (behind ``[api] key`` when set).
    A handler that raises is answered with 500 and logged; it never takes the daemon down."""

    def http_routes(self) -> Mapping[str, HttpHandler]: ...


@frozen
class SourceType:
    """A kind of source a plugin provides."""

    name: str
    """The value of ``plugin = "..."`` that selects this type in a ``[sources.NAME]`` table."""
    options: type
    """An attrs class; the ``[sources.NAME]`` table (without ``plugin``) is loaded into it strictly."""
    create: Callable[[Any], Source]
    """Makes a Source from the loaded options. Raising ``ValueError`` is a config error."""
    description: str = ""
