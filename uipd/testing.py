"""Helpers for testing a source plugin (and uipd itself); public plugin API for tests.

- :class:`FakePublisher`: the daemon's publisher on an in-memory hub, recording every
  publication, to drive a source's ``run`` in a unit test.
- :func:`run_daemon`: a real uipd daemon in the test's task, on free ports.
- :func:`serve_asgi`: serve a small ASGI app (a fake upstream) on 127.0.0.1, a free port.
- :func:`free_port`: a TCP port free right now, for a config that must name one.

::

    async def test_feed():
        source = create(Options(...))
        pub = FakePublisher(source.topics)
        with trio.move_on_after(1):
            await source.run(pub)
        assert pub.is_ready and pub.state["topic"] == {...}

    async def test_in_a_daemon():
        async with run_daemon({"sources": {"demo": {"plugin": "example"}}}) as daemon:
            ...  # daemon.ws_port, daemon.api_port
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from attrs import define, field
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from uipd.config import from_dict
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import TopicTable
from uipd.runtime.daemon import Daemon
from uipd.server.clock import now
from uipd.sources.publisher import HubPublisher
from uipd.sources.registry import PluginRegistry

__all__ = ["DAEMON_DEFAULTS", "FakePublisher", "free_port", "run_daemon", "serve_asgi", "serving"]


@define
class _RecordingPublisher(HubPublisher):
    """The daemon's publisher, telling its FakePublisher every publication the hub took."""

    recorded: Callable[[Publication, PublishResult], None] = field(kw_only=True, default=lambda pub, result: None)

    def submit(self, pub: Publication) -> PublishResult:
        result = super().submit(pub)
        self.recorded(pub, result)
        return result


class FakePublisher:
    """The daemon's own publisher on a hub of its own, recording every publication.

    Every call goes through the real :class:`~uipd.sources.publisher.HubPublisher` into a real
    :class:`~uipd.core.hub.Hub` holding ``topics``: a source under test meets exactly what the
    daemon does with its data.  Topics not in ``topics``, entities that are not objects with a
    string or integer ``id`` and data JSON cannot hold are refused (``ValueError``, counted in
    ``publisher.refused`` and logged as in the daemon); what is recorded is the hub's own copy,
    decoded from what clients receive; ``replace`` publishes only the difference.  Unlike the
    daemon, only ``ready()`` sets :attr:`is_ready`.
    """

    def __init__(self, topics: Iterable[str], *, source: str = "under-test") -> None:
        self.topics: tuple[str, ...] = tuple(topics)
        self.hub = Hub(TopicTable.of(self.topics))
        """The hub published into (``hub.topics``: the state; ``hub.counters``)."""
        self.publisher = _RecordingPublisher(self.hub, now, topics=frozenset(self.topics), source=source, recorded=self._record)
        """The daemon's publisher every call goes through (``publisher.refused``: refusals by code)."""
        self.updates: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        """Every UPDATE as ``(topic, entities, removed ids)``, in order."""
        self.alerts: list[tuple[str, Any]] = []
        """Every ALERT as ``(topic, data)``, in order."""
        self.is_ready = False
        """``ready()`` was called."""
        self.ready_after: set[str] = set()
        """The topics that had state when ``ready()`` was last called."""
        self.seq = 0
        """The seq of the last publication (the hub's: updates and alerts of a topic share it)."""

    @property
    def state(self) -> dict[str, dict[str, Mapping[str, Any]]]:
        """Topic -> string id -> entity: what a client's SNAPSHOT would hold (a copy of the hub's index)."""
        return {t: dict(self.hub.topics.state_of(t)) for t in self.topics}

    def _record(self, pub: Publication, result: PublishResult) -> None:
        assert pub.topic is not None  # a source's publications always name their topic
        if pub.kind == "UPDATE":
            self.updates.append((pub.topic, list(pub.data), list(pub.removed)))
        else:
            self.alerts.append((pub.topic, pub.data))
        if result.seq is not None:
            self.seq = result.seq

    def update(self, topic: str, entities: Iterable[Mapping[str, Any]] = (), removed: Iterable[str | int] = ()) -> int | None:
        return self.publisher.update(topic, entities, removed)

    def alert(self, topic: str, data: Any) -> int | None:
        return self.publisher.alert(topic, data)

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        return self.publisher.replace(topic, entities)

    def current(self, topic: str) -> Mapping[str, Mapping[str, Any]]:
        return self.publisher.current(topic)

    def ready(self) -> None:
        self.publisher.ready()
        self.is_ready = True
        self.ready_after = {t for t in self.topics if self.hub.topics.state_of(t)}


DAEMON_DEFAULTS: Mapping[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 0, "drain_timeout": 2.0},
    "api": {"port": 0},
}
"""What :func:`run_daemon` puts under the caller's config: both listeners on 127.0.0.1, free ports."""


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


@asynccontextmanager
async def run_daemon(config: Mapping[str, Any] | None = None, plugins: Sequence[tuple[str, object]] = ()) -> AsyncIterator[Daemon]:
    """Run a real uipd daemon in the caller's task (its own nursery inside the caller's) until the
    block exits, then shut it down as SIGTERM would.

    ``config`` is a config file's tables as a dict (``{"sources": {"demo": {"plugin": "example"}}}``),
    merged table by table over :data:`DAEMON_DEFAULTS` and loaded as strictly as a file
    (``test.toml`` in errors).  Source types come from the installed plugins plus ``plugins``:
    ``(name, module_or_object)`` pairs holding ``uipd_source_types`` hooks, for plugins defined in
    the test itself.  The listeners' ports are ``daemon.ws_port`` and ``daemon.api_port``.
    """
    daemon = Daemon(from_dict(_merge(DAEMON_DEFAULTS, config or {}), file="test.toml"), PluginRegistry.discover(plugins))
    async with serving(daemon):
        yield daemon


@asynccontextmanager
async def serving(daemon: Daemon) -> AsyncIterator[Daemon]:
    """Run a daemon built by the test (e.g. loaded from a file, so that a reload re-reads it) in
    the test's task until the block ends; then it drains as on SIGTERM."""
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_shutdown()


async def _lifespan(receive: Any, send: Any) -> None:
    # nothing to set up: acknowledge startup and shutdown
    while True:
        kind = (await receive())["type"]
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI ``app`` with hypercorn on 127.0.0.1, a free port, until the block exits;
    yields the base URL (``http://127.0.0.1:PORT``).  Lifespan messages are answered here, so
    ``app`` needs to handle only ``http`` scopes."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await app(scope, receive, send)

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        (bound,) = await nursery.start(lambda task_status: serve(asgi, config, shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield bound
        finally:
            stop.set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a config that must name its port, e.g. a push
    source's ``notify_url`` pointing at the API listener).  Prefer port 0 where you can."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
