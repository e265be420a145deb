"""The daemon: one nursery owns the WebSocket accept loop, every client connection, the
heartbeat supervisor, the HTTP API and every source; SIGTERM/SIGINT drain it within the
configured time.
"""

from __future__ import annotations

import gc
import logging
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import trio
from attrs import define, field

from uipd import reload as config_reload
from uipd import systemd
from uipd.api.app import ApiApp
from uipd.cluster.factory import make_broker
from uipd.cluster.lease import leases_of, run_with_lease
from uipd.cluster.memory import MemoryBroker
from uipd.cluster.redis import RedisBroker
from uipd.api.server import serve_api
from uipd.auth import AuthError, Authenticator, Identity, token_from
from uipd.config import Config, ConfigError, ServerConfig
from uipd.core.admission import UNAUTHORIZED, Refusal, check_handshake
from uipd.core.hub import Hub, HubSettings, PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import TopicTable
from uipd.plugin import HttpHandler
from uipd.server.clock import now
from uipd.server.accept import AcceptEpisode, serve_listeners
from uipd.server.connection import ClientConnection, serve_stream
from uipd.server.flusher import Flusher
from uipd.server.heartbeat import supervise_heartbeats
from uipd.sources.publisher import HubPublisher
from uipd.metrics import Metrics
from uipd.sources.registry import ConfiguredSource, PluginRegistry, check_config
from uipd.sources.supervisor import SourceStatus, supervise

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


def _loopback(address: tuple[Any, ...]) -> tuple[str, int]:
    """Where to reach a listener bound to ``address`` from this host."""
    host, port = address[0], address[1]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def hub_settings(config: Config) -> HubSettings:
    s, hb = config.server, config.heartbeat
    return HubSettings(
        welcome=s.welcome,
        default_topics=s.default_topics,
        heartbeat_interval=hb.interval,
        heartbeat_timeout=hb.timeout,
        max_queue_bytes=s.max_queue_bytes,
        slow_consumer=s.slow_consumer,
        rate_limit=s.rate_limit,
        rate_burst=float(s.rate_burst),
        rate_limit_strikes=s.rate_limit_strikes,
        max_subscriptions=s.max_subscriptions,
        max_message_bytes=s.max_message_bytes,
        max_fragments=s.max_fragments,
        snapshot_budget_bytes=float(s.snapshot_budget_bytes),
        snapshot_burst_bytes=float(s.snapshot_burst_bytes),
    )


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
    hub: Hub = field(init=False)
    broker: MemoryBroker | RedisBroker = field(init=False)
    """Every publish goes through it: this node's hub directly, or the cluster through Redis."""
    api_publisher: HubPublisher = field(init=False)
    connections: dict[str, ClientConnection] = field(factory=dict, init=False)
    sources: list[SourceStatus] = field(factory=list, init=False)
    ws_port: int = field(default=0, init=False)
    api_port: int = field(default=0, init=False)
    listening: bool = field(default=False, init=False)
    shutting_down: bool = field(default=False, init=False)
    interrupted: bool = field(default=False, init=False)
    """A second SIGTERM/SIGINT stopped the daemon at once, without finishing the drain (exit 130)."""
    _configured: list[Any] = field(factory=list, init=False)
    _routes: dict[tuple[str, str], HttpHandler] = field(factory=dict, init=False)
    authenticator: Authenticator = field(init=False)
    tls: ssl.SSLContext | None = field(default=None, init=False)
    """The WebSocket listener's TLS context, loaded with the config (restart-only)."""
    refusals: Counter[str] = field(factory=Counter, init=False)
    """Handshakes refused, by reason (see uipd.core.admission)."""
    _per_ip: Counter[str] = field(factory=Counter, init=False)
    """Connections from each address, counting those admitted and not registered yet."""
    _admitted: int = field(default=0, init=False)
    """Handshakes admitted whose connection is not registered yet (each holds a slot)."""
    metrics: Metrics = field(init=False)
    reloads: Counter[str] = field(factory=Counter, init=False)
    """Config reloads by result (``ok``, ``failed``)."""
    accepted: int = field(default=0, init=False)
    flusher: Flusher = field(factory=Flusher, init=False)
    """Writes every client's new frames, once per scheduler round (uipd.server.flusher)."""
    """TCP connections taken by the accept loop (the watchdog probe watches it move)."""
    api_app: ApiApp | None = field(default=None, init=False)
    _nursery: trio.Nursery | None = field(default=None, init=False)
    _source_tasks: dict[str, tuple[trio.CancelScope, trio.Event]] = field(factory=dict, init=False)
    """Each running source's cancel scope, and the event set once its task has ended."""
    _probe_address: tuple[str, int] | None = field(default=None, init=False)
    _reload_lock: trio.Lock = field(factory=trio.Lock, init=False)
    _api_stop: trio.Event = field(factory=trio.Event, init=False)
    _stop: trio.Event = field(factory=trio.Event, init=False)
    _drained: trio.Event = field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        # Config and plugin errors surface here, before anything listens (the same check as
        # uipd check-config and a reload).
        checked = check_config(self.config, self.registry)
        self._configured = checked.sources
        self.authenticator = checked.authenticator
        self.tls = checked.tls
        self.hub = Hub(TopicTable.of(checked.topics), hub_settings(self.config))
        self.metrics = Metrics(self)
        self.broker = make_broker(self.config.broker, self.hub, now, self._node_stats)
        self.api_publisher = HubPublisher(self.hub, now, observe=self.metrics.observe_publish, broker=self.broker)
        for cs in self._configured:
            http_routes = getattr(cs.source, "http_routes", None)
            if http_routes is not None:
                try:
                    routes = dict(http_routes())
                except Exception as exc:  # plugin code: a config error naming the source, not a crash
                    raise ConfigError(f"{self.config.path}: sources.{cs.name}: http_routes() failed: {exc!r}") from None
                for route, handler in routes.items():
                    self._routes[(cs.name, route)] = handler

    # -- ApiBackend -------------------------------------------------------------------------------

    async def publish(self, pub: Publication) -> PublishResult:
        return await self.api_publisher.confirm(pub)

    def _node_stats(self) -> dict[str, Any]:
        return {"clients": len(self.connections), "ws_port": self.ws_port, "api_port": self.api_port}

    def source_route(self, source: str, route: str) -> HttpHandler | None:
        return self._routes.get((source, route))

    def websocket_endpoint(self) -> str:
        s = self.config.server
        return f"{'wss' if s.tls_cert else 'ws'} {self.ws_port} {s.paths[0]}"

    def stats(self) -> dict[str, Any]:
        out = self.hub.stats()
        out["sources"] = {
            s.name: {
                "running": s.running, "ready": s.ready, "leader": s.leader, "restarts": s.restarts, "errors": s.errors,
                "refused": sum(s.publisher.refused.values()),
            }
            for s in self.sources
        }
        cluster = self.broker.cluster_stats()
        if cluster is not None:
            out["cluster"] = cluster
        return out

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

    # -- the ConnectionHost of uipd.server.connection ----------------------------------------------

    @property
    def server_config(self) -> ServerConfig:
        return self.config.server

    def count_accept(self) -> None:
        self.accepted += 1

    def admit(self, target: str, headers: Mapping[str, str], ip: str) -> Refusal | Identity:
        s = self.config.server
        refusal = check_handshake(
            key=headers.get("sec-websocket-key"),
            path=target,
            origin=headers.get("origin"),
            accepting=not self.shutting_down,
            paths=s.paths,
            allowed_origins=s.allowed_origins,
            clients=len(self.connections) + self._admitted,
            max_clients=s.max_clients,
            clients_from_ip=self._per_ip[ip],
            max_per_ip=s.max_connections_per_ip,
        )
        if refusal is not None:
            return refusal
        try:
            identity = self.authenticator.authenticate(token_from(target, headers), time.time())
        except AuthError as exc:
            log.info("handshake from %s refused: %s", ip, exc)
            return UNAUTHORIZED
        # The slot is taken now: the 101 is still to be written (with TLS that awaits), and
        # handshakes decided meanwhile must count this one (max_clients, max_connections_per_ip).
        self._admitted += 1
        self._per_ip[ip] += 1
        return identity

    def release(self, ip: str) -> None:
        self._admitted -= 1
        self._forget_ip(ip)

    def count_refusal(self, refusal: Refusal) -> None:
        self.refusals[refusal.reason] += 1

    def _forget_ip(self, ip: str) -> None:
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def register(self, connection: ClientConnection) -> Callable[[], None]:
        key = connection.session.id
        self.connections[key] = connection
        self._admitted -= 1  # its slot (and its count in _per_ip) was taken at admission
        ip = connection.remote
        if self.shutting_down:  # accepted while the drain began: it is closed like the others
            connection.session.outbound.request_close(1001, "going away", flush=True)

        def unregister() -> None:
            self.connections.pop(key, None)
            self._forget_ip(ip)
            if self.shutting_down and not self.connections:
                self._drained.set()

        return unregister

    async def run(self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:  # the daemon's nursery: owns every task
            self._nursery = nursery
            await nursery.start(self.flusher.run)
            if "ws" in self.inherited_fds:  # systemd socket activation: the socket outlives restarts
                tcp_listeners = [systemd.listener_from(self.inherited_fds["ws"])]
            else:
                with _listening("WebSocket listener", cfg.server.host, cfg.server.port):
                    tcp_listeners = await trio.open_tcp_listeners(cfg.server.port, host=cfg.server.host or None, backlog=4096)
            self._probe_address = _loopback(tcp_listeners[0].socket.getsockname())
            self.ws_port = tcp_listeners[0].socket.getsockname()[1]
            listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
            if self.tls is not None:  # loaded with the config (uipd.config.tls_context)
                listeners = [trio.SSLListener(l, self.tls, https_compatible=True) for l in tcp_listeners]
            accept_scope = trio.CancelScope()
            # Both listeners run out of descriptors together: one episode, one log line.
            episode = AcceptEpisode()
            backoff = lambda: (self.config.server.accept_backoff, self.config.server.accept_backoff_max)  # noqa: E731 (read at each episode: a reload applies)

            async def accept_loop() -> None:
                with accept_scope:
                    await serve_listeners(partial(serve_stream, host=self), listeners, handler_nursery=nursery, backoff=backoff, episode=episode)

            nursery.start_soon(accept_loop)
            self.listening = True
            app = ApiApp(
                self, key=cfg.api.key, max_body_bytes=cfg.api.max_body_bytes, dashboard=cfg.api.dashboard, metrics=self.metrics.render,
                allowed_origins=cfg.api.allowed_origins, request_timeout=cfg.api.request_timeout,
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
            await nursery.start(self.broker.run)
            for cs in self._configured:
                await self.start_source(cs)
            nursery.start_soon(self._watch_signals)
            nursery.start_soon(self._summarise_refusals)
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

    # -- sources, reload, systemd -----------------------------------------------------------------

    @property
    def configured_sources(self) -> list[ConfiguredSource]:
        """The sources running now (or waiting to restart), in config order."""
        return self._configured

    @configured_sources.setter
    def configured_sources(self, value: list[ConfiguredSource]) -> None:
        self._configured = value

    async def _summarise_refusals(self) -> None:
        """Log each source's summary of refused publishes once its interval is over: without this
        the end of a burst would be counted but never logged (uipd.plugin_tools.RepeatLog)."""
        while True:
            interval = self.config.log.repeat_interval
            for s in list(self.sources):
                s.publisher.refusals.interval = interval  # a reload may change it
                s.publisher.refusals.flush()
            await trio.sleep(min(1.0, interval))

    async def start_source(self, cs: ConfiguredSource) -> None:
        """Start one source's supervisor in the daemon's nursery, under its own cancel scope."""
        assert self._nursery is not None
        publisher = HubPublisher(
            self.hub, now, topics=frozenset(cs.topics), observe=self.metrics.observe_publish, broker=self.broker, source=cs.name,
            refusal_log_interval=self.config.log.repeat_interval,
        )
        status = SourceStatus(cs.name, publisher)
        scope, done = trio.CancelScope(), trio.Event()
        self.sources.append(status)
        self._source_tasks[cs.name] = (scope, done)
        try:
            await self._nursery.start(self._run_source, cs, status, scope, done)
        except BaseException:  # it never started (e.g. its lease): not listed as running
            self.sources.remove(status)
            self._source_tasks.pop(cs.name, None)
            raise

    async def _run_source(
        self, cs: ConfiguredSource, status: SourceStatus, scope: trio.CancelScope, done: trio.Event,
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                leases = leases_of(self.broker)
                if leases is not None and cs.config.run_on == "leader":
                    # The state comes from the cluster whichever node runs the source: ready here.
                    status.publisher.ready()
                    status.leader = False

                    async def lead() -> None:  # run_with_lease runs it exactly while this node holds the lease
                        status.leader = True
                        try:
                            await supervise(cs, status)
                        finally:
                            status.leader = False

                    await run_with_lease(leases, cs.name, self.config.broker.lease_ttl, lead, task_status=task_status)
                else:
                    await supervise(cs, status, task_status=task_status)
        finally:
            status.running = False
            done.set()

    async def stop_source(self, name: str) -> None:
        """Cancel one source's task (a reload removed or changed it) and return once it has ended
        (its cleanup, its lease released); its topics keep their state."""
        task = self._source_tasks.pop(name, None)
        self.sources[:] = [s for s in self.sources if s.name != name]
        if task is not None:
            scope, done = task
            scope.cancel()
            await done.wait()

    async def reload(self) -> bool:
        """Re-read the config file and apply it (see uipd.reload); False if it was invalid."""
        async with self._reload_lock:
            return await config_reload.reload(self)

    async def _watch_reload(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                if not self.shutting_down:
                    await self.reload()

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        ready = sum(1 for s in self.sources if s.ready)
        state = "draining; " if self.shutting_down else ""
        return f"{state}{len(self.hub.sessions)} clients, {len(self.hub.topics.names)} topics, {ready}/{len(self.sources)} sources ready"

    async def _probe(self) -> bool:
        """For the watchdog: the loop runs (we are here) and the accept loop takes a connection."""
        if self._probe_address is None or self.shutting_down:
            return not self.shutting_down
        return await systemd.accept_probe(self._probe_address, lambda: self.accepted)

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
        self.shutting_down = True
        accept_scope.cancel()
        await self.notifier.stopping(self.status_line())
        with trio.move_on_after(self.config.server.drain_timeout * 0.9) as scope:
            if self.connections:
                log.info("closing %d client connection(s)", len(self.connections))
                self.hub.close_all()
                await self._drained.wait()
        if scope.cancelled_caught:
            log.warning("drain time over with %d client(s) still open; dropping them", len(self.connections))
        self._api_stop.set()
