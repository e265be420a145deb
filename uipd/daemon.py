"""The daemon: one nursery owns the WebSocket accept loop, every client connection, the
heartbeat supervisor, the HTTP API and every source; SIGTERM/SIGINT drain it within the
configured time.
"""

from __future__ import annotations

import logging
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import trio
from attrs import define, field

from uipd.api.app import ApiApp
from uipd.api.server import serve_api
from uipd.auth import AuthError, Authenticator, Identity, make_authenticator, token_from
from uipd.config import Config
from uipd.core.admission import UNAUTHORIZED, Refusal, check_handshake
from uipd.core.hub import Hub, HubSettings, PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import TopicTable
from uipd.plugin import HttpHandler
from uipd.server.clock import now
from uipd.server.connection import ClientConnection, serve_stream
from uipd.server.heartbeat import supervise_heartbeats
from uipd.sources.publisher import HubPublisher
from uipd.sources.registry import PluginRegistry, build_sources, offered_topics
from uipd.sources.supervisor import SourceStatus, supervise

log = logging.getLogger(__name__)


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
    )


@define
class Daemon:
    config: Config
    registry: PluginRegistry
    hub: Hub = field(init=False)
    api_publisher: HubPublisher = field(init=False)
    connections: dict[str, ClientConnection] = field(factory=dict, init=False)
    sources: list[SourceStatus] = field(factory=list, init=False)
    ws_port: int = field(default=0, init=False)
    api_port: int = field(default=0, init=False)
    listening: bool = field(default=False, init=False)
    shutting_down: bool = field(default=False, init=False)
    _configured: list[Any] = field(factory=list, init=False)
    _routes: dict[tuple[str, str], HttpHandler] = field(factory=dict, init=False)
    authenticator: Authenticator = field(init=False)
    refusals: Counter[str] = field(factory=Counter, init=False)
    """Handshakes refused, by reason (see uipd.core.admission)."""
    _per_ip: Counter[str] = field(factory=Counter, init=False)
    _api_stop: trio.Event = field(factory=trio.Event, init=False)
    _stop: trio.Event = field(factory=trio.Event, init=False)
    _drained: trio.Event = field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        # Config and plugin errors surface here, before anything listens.
        self._configured = build_sources(self.config, self.registry)
        self.authenticator = make_authenticator(self.config.auth)
        topics = offered_topics(self.config, self._configured)
        self.hub = Hub(TopicTable.of(topics), hub_settings(self.config))
        self.api_publisher = HubPublisher(self.hub, now)
        for cs in self._configured:
            http_routes = getattr(cs.source, "http_routes", None)
            if http_routes is not None:
                for route, handler in http_routes().items():
                    self._routes[(cs.name, route)] = handler

    # -- ApiBackend -------------------------------------------------------------------------------

    def publish(self, pub: Publication) -> PublishResult:
        return self.api_publisher.submit(pub)

    def source_route(self, source: str, route: str) -> HttpHandler | None:
        return self._routes.get((source, route))

    def stats(self) -> dict[str, Any]:
        out = self.hub.stats()
        out["sources"] = {
            s.name: {"running": s.running, "ready": s.ready, "restarts": s.restarts, "errors": s.errors} for s in self.sources
        }
        return out

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        waiting = [s.name for s in self.sources if not s.ready]
        ready = self.listening and not self.shutting_down and not waiting
        details: dict[str, Any] = {"listening": self.listening, "shutting_down": self.shutting_down}
        if waiting:
            details["waiting_for"] = waiting
        return ready, details

    # -- lifetime ---------------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        self._stop.set()

    def _admit(self, target: str, headers: Mapping[str, str], ip: str) -> Refusal | Identity:
        s = self.config.server
        refusal = check_handshake(
            path=target,
            origin=headers.get("origin"),
            accepting=not self.shutting_down,
            paths=s.paths,
            allowed_origins=s.allowed_origins,
            clients=len(self.connections),
            max_clients=s.max_clients,
            clients_from_ip=self._per_ip[ip],
            max_per_ip=s.max_connections_per_ip,
        )
        if refusal is None:
            try:
                return self.authenticator.authenticate(token_from(target, headers), time.time())
            except AuthError as exc:
                log.info("handshake from %s refused: %s", ip, exc)
                refusal = UNAUTHORIZED
        self.refusals[refusal.reason] += 1
        return refusal

    def _register(self, connection: ClientConnection) -> Callable[[], None]:
        key = connection.session.id
        self.connections[key] = connection
        ip = connection.remote
        self._per_ip[ip] += 1
        if self.shutting_down:  # accepted while the drain began: it is closed like the others
            connection.session.outbound.request_close(1001, "going away", flush=True)

        def unregister() -> None:
            self.connections.pop(key, None)
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            if self.shutting_down and not self.connections:
                self._drained.set()

        return unregister

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        await serve_stream(stream, self.hub, self.config.server, self._admit, self._register)

    async def run(self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:  # the daemon's nursery: owns every task
            tcp_listeners = await trio.open_tcp_listeners(cfg.server.port, host=cfg.server.host or None, backlog=4096)
            self.ws_port = tcp_listeners[0].socket.getsockname()[1]
            listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
            if cfg.server.tls_cert:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(cfg.server.tls_cert, cfg.server.tls_key)
                listeners = [trio.SSLListener(l, tls, https_compatible=True) for l in tcp_listeners]
            accept_scope = trio.CancelScope()

            async def accept_loop() -> None:
                with accept_scope:
                    await trio.serve_listeners(self._serve_stream, listeners, handler_nursery=nursery)

            nursery.start_soon(accept_loop)
            self.listening = True
            app = ApiApp(self, key=cfg.api.key, max_body_bytes=cfg.api.max_body_bytes, dashboard=cfg.api.dashboard)
            binds = await nursery.start(serve_api, app, cfg.api.host, cfg.api.port, self._api_stop.wait)
            self.api_port = int(binds[0].rsplit(":", 1)[1])
            tick = min(1.0, cfg.heartbeat.interval / 4)
            await nursery.start(lambda task_status: supervise_heartbeats(self.hub, self.connections, tick=tick, task_status=task_status))
            for cs in self._configured:
                status = SourceStatus(cs.name, HubPublisher(self.hub, now, topics=frozenset(cs.topics)))
                self.sources.append(status)
                await nursery.start(supervise, cs, status)
            nursery.start_soon(self._watch_signals)
            log.info(
                "uipd listening: WebSocket %s://%s:%d%s, HTTP API http://%s:%d; topics: %s",
                "wss" if cfg.server.tls_cert else "ws", cfg.server.host, self.ws_port, ",".join(cfg.server.paths), cfg.api.host, self.api_port,
                ", ".join(self.hub.topics.names) or "none",
            )
            task_status.started(self)
            await self._stop.wait()
            await self._drain(accept_scope)
            nursery.cancel_scope.cancel()
        log.info("uipd stopped")

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    raise KeyboardInterrupt
                log.info("%s received: draining (at most %.1f s)", signal.Signals(signum).name, self.config.server.drain_timeout)
                self.request_shutdown()

    async def _drain(self, accept_scope: trio.CancelScope) -> None:
        """No new connections; every client gets close 1001 after its queued frames; all within drain_timeout."""
        self.shutting_down = True
        accept_scope.cancel()
        with trio.move_on_after(self.config.server.drain_timeout * 0.9) as scope:
            if self.connections:
                log.info("closing %d client connection(s)", len(self.connections))
                self.hub.close_all()
                await self._drained.wait()
        if scope.cancelled_caught:
            log.warning("drain time over with %d client(s) still open; dropping them", len(self.connections))
        self._api_stop.set()
