"""The daemon: one nursery owns the WebSocket accept loop, every client connection, the
heartbeat supervisor, the HTTP API and every source; SIGTERM/SIGINT drain it within the
configured time.  What runs in it is owned elsewhere: the sources by a
:class:`~uipd.runtime.sources.SourceRunner`, the client connections by a
:class:`~uipd.runtime.connections.ConnectionRegistry`.
"""

from __future__ import annotations

import gc
import logging
import signal
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import trio
from attrs import define, field

from uipd.runtime import reload as config_reload
from uipd.runtime import systemd
from uipd.api.app import ApiApp
from uipd.cluster.factory import make_broker
from uipd.cluster.memory import MemoryBroker
from uipd.cluster.redis import RedisBroker
from uipd.api.server import serve_api
from uipd.config import Config
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import TopicTable
from uipd.plugin import HttpHandler
from uipd.server.clock import now
from uipd.server.accept import AcceptEpisode, serve_listeners
from uipd.server.connection import ClientConnection, serve_stream
from uipd.server.flusher import Flusher
from uipd.server.idle import IdleReader
from uipd.server.heartbeat import supervise_heartbeats
from uipd.sources.publisher import HubPublisher
from uipd.runtime.metrics import Metrics
from uipd.runtime.addresses import reachable
from uipd.runtime.collector import manage_collector
from uipd.runtime.connections import ConnectionRegistry
from uipd.runtime.group import WorkerGroup
from uipd.runtime.settings import hub_settings
from uipd.runtime.sources import SourceRunner
from uipd.sources.registry import ConfiguredSource, PluginRegistry, check_config
from uipd.sources.supervisor import SourceStatus

log = logging.getLogger(__name__)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: what a nursery's tasks actually raised."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@contextmanager
def _listening(what: str, host: str, port: int) -> Iterator[None]:
    """Name the listener in a bind failure: the OSError alone says only "Address already in use".
    It comes out of trio's nurseries inside exception groups, hence except*."""
    try:
        yield
    except* OSError as group:
        first = leaves(group)[0]
        raise OSError(getattr(first, "errno", None), f"{what} {host or '*'}:{port}: {getattr(first, 'strerror', None) or first}") from None


@define
class Daemon:
    config: Config
    registry: PluginRegistry
    overrides: tuple[str, ...] = ()
    """The ``--set`` overrides, applied again when the config file is reloaded (SIGHUP)."""
    notifier: systemd.Notifier = field(factory=lambda: systemd.Notifier(None))
    """Where READY/STATUS/WATCHDOG/STOPPING/RELOADING go (systemd's NOTIFY_SOCKET; none by default)."""
    watchdog: float | None = None
    """Seconds between WATCHDOG=1 notifications (half of systemd's WATCHDOG_USEC); None: no watchdog."""
    inherited_fds: Mapping[str, int] = field(factory=dict)
    """Listening sockets passed by systemd (``ws``, ``api``): used instead of binding."""
    hangup_before_start: Callable[[], bool] = lambda: False
    """Whether a SIGHUP came before the reload watcher was installed (uipd.cli.hangups defers
    it from the start of ``uipd run``): the watcher then reloads once."""
    manage_gc: bool = False
    """Run the garbage collector's policy for long-lived connections (uipd.runtime.collector):
    ``uipd run`` does; it changes the whole process, so an embedding process (tests) opts in."""
    group: WorkerGroup | None = None
    """This daemon is one worker of a supervisor's group (uipd.runtime.workers): its stats and
    metrics answer for the whole group (uipd.runtime.group).  None: a daemon on its own."""
    hub: Hub = field(init=False)
    broker: MemoryBroker | RedisBroker = field(init=False)
    """Every publish goes through it: this node's hub directly, or the cluster through Redis."""
    api_publisher: HubPublisher = field(init=False)
    clients: ConnectionRegistry = field(init=False)
    """Every client connection, from its admission on (the server's ConnectionHost)."""
    runner: SourceRunner = field(init=False)
    """Every source, its task and its routes."""
    ws_port: int = field(default=0, init=False)
    api_port: int = field(default=0, init=False)
    listening: bool = field(default=False, init=False)
    interrupted: bool = field(default=False, init=False)
    """A second SIGTERM/SIGINT stopped the daemon at once, without finishing the drain (exit 130)."""
    tls: ssl.SSLContext | None = field(default=None, init=False)
    """The WebSocket listener's TLS context, loaded with the config (restart-only)."""
    metrics: Metrics = field(init=False)
    reloads: Counter[str] = field(factory=Counter, init=False)
    """Config reloads by result (``ok``, ``failed``)."""
    flusher: Flusher = field(factory=Flusher, init=False)
    """Writes every client's new frames, once per scheduler round (uipd.server.flusher)."""
    idle_reader: IdleReader = field(factory=IdleReader, init=False)
    """Reads the sockets of idle connections, their pongs without waking them (uipd.server.idle)."""
    api_app: ApiApp | None = field(default=None, init=False)
    _nursery: trio.Nursery | None = field(default=None, init=False)
    _probe_address: tuple[str, int] | None = field(default=None, init=False)
    _reload_lock: trio.Lock = field(factory=trio.Lock, init=False)
    _api_stop: trio.Event = field(factory=trio.Event, init=False)
    _stop: trio.Event = field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        # Config and plugin errors surface here, before anything listens (the same check as
        # uipd check-config and a reload).
        checked = check_config(self.config, self.registry)
        self.tls = checked.tls
        self.hub = Hub(TopicTable.of(checked.topics), hub_settings(self.config))
        self.metrics = Metrics(self)
        self.broker = make_broker(self.config.broker, self.hub, now, self._node_stats)
        self.api_publisher = HubPublisher(self.hub, now, observe=self.metrics.observe_publish, broker=self.broker)
        self.clients = ConnectionRegistry(self.hub, self.flusher, self.config.server, checked.authenticator, self.idle_reader)
        self.runner = SourceRunner(self.hub, self.broker, self.config, observe=self.metrics.observe_publish)
        self.runner.plan(checked.sources)

    @property
    def connections(self) -> dict[str, ClientConnection]:
        return self.clients.connections

    @property
    def refusals(self) -> Counter[str]:
        return self.clients.refusals

    @property
    def shutting_down(self) -> bool:
        return self.clients.draining

    @property
    def sources(self) -> list[SourceStatus]:
        """Each source's status, in config order."""
        return self.runner.statuses

    @property
    def configured_sources(self) -> list[ConfiguredSource]:
        """The sources running now (or waiting to restart), in config order."""
        return self.runner.configured

    # -- ApiBackend -------------------------------------------------------------------------------

    async def publish(self, pub: Publication) -> PublishResult:
        return await self.api_publisher.confirm(pub)

    def _node_stats(self) -> dict[str, Any]:
        stats = {"clients": len(self.connections), "ws_port": self.ws_port, "api_port": self.api_port}
        return stats if self.group is None else stats | self.group.announce(self)

    def source_route(self, source: str, route: str) -> HttpHandler | None:
        return self.runner.route(source, route)

    def websocket_endpoint(self) -> str:
        s = self.config.server
        return f"{'wss' if s.tls_cert else 'ws'} {self.ws_port} {s.paths[0]}"

    def stats(self) -> dict[str, Any]:
        out = self.hub.stats()
        out["compressedClients"] = self.flusher.compression.clients  # negotiated permessage-deflate
        out["sources"] = self.runner.stats()
        cluster = self.broker.cluster_stats()
        if cluster is not None:
            out["cluster"] = cluster
        return out if self.group is None else self.group.stats(self, out)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        waiting = [s.name for s in self.sources if not s.ready]
        ready = self.listening and not self.shutting_down and not waiting and self.broker.ready
        details: dict[str, Any] = {"listening": self.listening, "shutting_down": self.shutting_down, "broker": self.broker.ready}
        if waiting:
            details["waiting_for"] = waiting
        return ready, details

    # -- lifetime ---------------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:  # the daemon's nursery: owns every task
            self._nursery = nursery
            await nursery.start(self.flusher.run)
            await nursery.start(self.idle_reader.run)
            if "ws" in self.inherited_fds:  # systemd socket activation: the socket outlives restarts
                tcp_listeners = [systemd.listener_from(self.inherited_fds["ws"])]
            else:
                with _listening("WebSocket listener", cfg.server.host, cfg.server.port):
                    tcp_listeners = await trio.open_tcp_listeners(cfg.server.port, host=cfg.server.host or None, backlog=cfg.server.listen_backlog)
            bound = tcp_listeners[0].socket.getsockname()
            self._probe_address = (reachable(bound[0]), bound[1])
            self.ws_port = bound[1]
            listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
            if self.tls is not None:  # loaded with the config (uipd.config.tls_context)
                listeners = [trio.SSLListener(l, self.tls, https_compatible=True) for l in tcp_listeners]
            accept_scope = trio.CancelScope()
            # Both listeners run out of descriptors together: one episode, one log line.
            episode = AcceptEpisode()
            backoff = lambda: (self.config.server.accept_backoff, self.config.server.accept_backoff_max)  # noqa: E731 (read at each episode: a reload applies)

            async def accept_loop() -> None:
                with accept_scope:
                    await serve_listeners(partial(serve_stream, host=self.clients), listeners, handler_nursery=nursery, backoff=backoff, episode=episode)

            nursery.start_soon(accept_loop)
            self.listening = True
            app = ApiApp(
                self, key=cfg.api.key, max_body_bytes=cfg.api.max_body_bytes, dashboard=cfg.api.dashboard,
                metrics=self.metrics.render if self.group is None else partial(self.group.metrics, self),
                allowed_origins=cfg.api.allowed_origins, request_timeout=cfg.api.request_timeout,
                host=cfg.api.host, allowed_hosts=cfg.api.allowed_hosts,
            )
            self.api_app = app
            api = partial(
                serve_api, fd=self.inherited_fds.get("api"), request_timeout=cfg.api.request_timeout, backoff=backoff, episode=episode,
            )
            with _listening("HTTP API listener", cfg.api.host, cfg.api.port):
                binds = await nursery.start(api, app, cfg.api.host, cfg.api.port, self._api_stop.wait)
            self.api_port = int(binds[0].rsplit(":", 1)[1])
            tick = min(1.0, cfg.heartbeat.interval / 4)
            await nursery.start(lambda task_status: supervise_heartbeats(self.hub, self.connections, tick=tick, task_status=task_status))
            # Everything made so far (modules, plugins, config, topic state) lives as long as the
            # process: keep it out of the garbage collector's full passes, which otherwise walk it
            # every time and show up as latency spikes under a steady publish load.
            gc.collect()
            gc.freeze()
            if self.manage_gc:
                clients = self.clients
                await nursery.start(partial(manage_collector, lambda: clients.closed, lambda: len(clients.connections), lambda: clients.draining))
            await nursery.start(self.broker.run)
            await self.runner.start_all(nursery)
            nursery.start_soon(self._watch_signals)
            nursery.start_soon(self.runner.summarise_refusals)
            await nursery.start(self._watch_reload)
            log.info(
                "uipd listening: WebSocket %s://%s:%d%s, HTTP API http://%s:%d; topics: %s",
                "wss" if cfg.server.tls_cert else "ws", cfg.server.host, self.ws_port, ",".join(cfg.server.paths), cfg.api.host, self.api_port,
                ", ".join(self.hub.topics.names) or "none",
            )
            await self.notifier.ready(self.status_line())
            nursery.start_soon(partial(systemd.notify_loop, self.notifier, self.status_line, self._probe, watchdog=self.watchdog))
            task_status.started(self)
            await self._stop.wait()
            await self._drain(accept_scope)
            nursery.cancel_scope.cancel()
        log.info("uipd stopped")

    # -- reload, signals, systemd ------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file and apply it (see uipd.runtime.reload); False if it was invalid."""
        async with self._reload_lock:
            return await config_reload.reload(self)

    async def _watch_reload(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            if self.hangup_before_start():
                log.info("SIGHUP received while starting: reloading now")
                await self.reload()
            async for _ in signals:
                if self.shutting_down:
                    log.info("SIGHUP received while draining: ignored")
                else:
                    await self.reload()

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        ready = sum(1 for s in self.sources if s.ready)
        state = "draining; " if self.shutting_down else ""
        return f"{state}{len(self.hub.sessions)} clients, {len(self.hub.topics.names)} topics, {ready}/{len(self.sources)} sources ready"

    async def _probe(self) -> bool:
        """For the watchdog: the loop runs (we are here) and the accept loop takes a connection."""
        # A worker's probe would connect to a port whose SO_REUSEPORT group hashes it to any
        # worker's socket (uipd.runtime.workers): there the loop running is what it proves.
        if self._probe_address is None or self.shutting_down or self.group is not None:
            return not self.shutting_down
        return await systemd.accept_probe(self._probe_address, lambda: self.clients.accepted)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    # Cancel everything rather than raise: an exception here would reach the
                    # command wrapped in the nursery's exception group (a traceback, exit 1).
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    self.interrupted = True
                    assert self._nursery is not None
                    self._nursery.cancel_scope.cancel()
                    return
                log.info("%s received: draining (at most %.1f s)", signal.Signals(signum).name, self.config.server.drain_timeout)
                self.request_shutdown()

    async def _drain(self, accept_scope: trio.CancelScope) -> None:
        """No new connections; every client gets close 1001 after its queued frames; all within drain_timeout."""
        self.clients.start_draining()
        accept_scope.cancel()
        await self.notifier.stopping(self.status_line())
        with trio.move_on_after(self.config.server.drain_timeout * 0.9) as scope:
            await self.clients.drained()
        if scope.cancelled_caught:
            log.warning("drain time over with %d client(s) still open; dropping them", len(self.connections))
        self._api_stop.set()
