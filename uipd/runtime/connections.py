"""The daemon's client connections: which handshakes are admitted, the slots they hold, the open
connections and their count per address — the :class:`~uipd.server.connection.ConnectionHost`
the server's connections talk to."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial

import trio
from attrs import define, field

from uipd.runtime.auth import AuthError, Authenticator, Identity, token_from
from uipd.config import ServerConfig
from uipd.core import closecodes
from uipd.core.admission import OVERLOADED, UNAUTHORIZED, Refusal, check_handshake
from uipd.core.hub import Hub
from uipd.server.clock import wall
from uipd.server.connection import ClientConnection
from uipd.server.flusher import Flusher
from uipd.server.idle import IdleReader

log = logging.getLogger(__name__)

DRAIN_PROGRESS_INTERVAL = 1.0
"""Seconds between two progress lines of a drain."""


@define
class ConnectionRegistry:
    """Every client connection of one daemon, from its admission to its end.

    A client takes its slot when its handshake is admitted (``pending`` until it is registered),
    so that handshakes decided meanwhile count it against ``max_clients`` and
    ``max_connections_per_ip``.  Once :meth:`start_draining` is called nothing is admitted any
    more (503) and :meth:`drained` returns when the last connection has gone."""

    hub: Hub
    flusher: Flusher
    server_config: ServerConfig
    """The handshake checks' settings, read at each handshake (a reload replaces them: :meth:`configure`)."""
    authenticator: Authenticator
    idle_reader: IdleReader | None = None
    """Where drained connections wait for their next bytes (the daemon runs it; None: trio's epoll)."""
    connections: dict[str, ClientConnection] = field(factory=dict, init=False)
    """The registered connections, by session id."""
    refusals: Counter[str] = field(factory=Counter, init=False)
    """Handshakes refused, by reason (see uipd.core.admission)."""
    per_ip: Counter[str] = field(factory=Counter, init=False)
    """Connections from each address, counting those admitted and not registered yet."""
    pending: int = field(default=0, init=False)
    """Handshakes admitted whose connection is not registered yet (each holds a slot)."""
    accepted: int = field(default=0, init=False)
    """TCP connections taken by the accept loop (the watchdog probe watches it move)."""
    closed: int = field(default=0, init=False)
    """Registered connections that ended (the garbage collector's policy counts them)."""
    handshaking: int = field(default=0, init=False)
    """TCP connections whose opening handshake is in progress (bounded by ``max_handshakes``)."""
    draining: bool = field(default=False, init=False)
    _drained: trio.Event = field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        self.flusher.compression.configure(self.server_config.compression_level, self.server_config.compression_threshold)

    def configure(self, server_config: ServerConfig, authenticator: Authenticator) -> None:
        """Decide the handshakes from now on by a reloaded config (open connections stay; frames
        compressed from now on use its compression level and threshold)."""
        self.server_config, self.authenticator = server_config, authenticator
        self.flusher.compression.configure(server_config.compression_level, server_config.compression_threshold)

    def count_accept(self) -> None:
        self.accepted += 1

    def start_handshake(self) -> Refusal | None:
        """A handshake begins; the 503 for one past ``max_handshakes`` (which does not count)."""
        limit = self.server_config.max_handshakes
        if limit and self.handshaking >= limit:
            return OVERLOADED.retry_later(self.server_config.retry_after)
        self.handshaking += 1
        return None

    def end_handshake(self) -> None:
        self.handshaking -= 1

    def count_refusal(self, refusal: Refusal) -> None:
        self.refusals[refusal.reason] += 1

    def admit(self, target: str, headers: Mapping[str, str], ip: str) -> Refusal | Identity:
        s = self.server_config
        refusal = check_handshake(
            key=headers.get("sec-websocket-key"),
            path=target,
            origin=headers.get("origin"),
            accepting=not self.draining,
            paths=s.paths,
            allowed_origins=s.allowed_origins,
            clients=len(self.connections) + self.pending,
            max_clients=s.max_clients,
            clients_from_ip=self.per_ip[ip],
            max_per_ip=s.max_connections_per_ip,
        )
        if refusal is not None:
            return refusal.retry_later(s.retry_after)
        try:
            identity = self.authenticator.authenticate(token_from(target, headers), wall())
        except AuthError as exc:
            log.info("handshake from %s refused: %s", ip, exc)
            return UNAUTHORIZED
        # The slot is taken now: the 101 is still to be written (with TLS that awaits), and
        # handshakes decided meanwhile must count this one (max_clients, max_connections_per_ip).
        self.pending += 1
        self.per_ip[ip] += 1
        return identity

    def release(self, ip: str) -> None:
        self.pending -= 1
        self._forget_ip(ip)

    def _forget_ip(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if not self.per_ip[ip]:
            del self.per_ip[ip]

    def register(self, connection: ClientConnection) -> Callable[[], None]:
        key = connection.session.id
        self.connections[key] = connection
        self.pending -= 1  # its slot (and its count in per_ip) was taken at admission
        ip = connection.remote
        if self.draining:  # accepted while the drain began: it is closed like the others
            connection.session.outbound.request_close(closecodes.GOING_AWAY.code, closecodes.GOING_AWAY.reason, flush=True)

        # A partial, not a closure: kept for the connection's life (its cells were ~200 bytes more).
        return partial(self._unregister, key, ip)

    def _unregister(self, key: str, ip: str) -> None:
        self.connections.pop(key, None)
        self.closed += 1
        self._forget_ip(ip)
        if self.draining and not self.connections:
            self._drained.set()

    def start_draining(self) -> None:
        """Admit no handshake from now on; one registered meanwhile is closed 1001 at once."""
        self.draining = True

    async def drained(self) -> None:
        """Close every connection (1001 after its queued frames) and return once all have gone;
        logs how many are left every DRAIN_PROGRESS_INTERVAL.  The closes are queued all at once:
        the flusher's next pass writes every close frame (``ConnectionWriter._close_now``), and
        each connection then ends when its peer answers, or close_timeout later."""
        if self.connections:
            total = len(self.connections)
            log.info("closing %d client connection(s)", total)
            self.hub.close_all()
            while not self._drained.is_set():
                with trio.move_on_after(DRAIN_PROGRESS_INTERVAL):
                    await self._drained.wait()
                if self.connections:
                    log.info("draining: %d of %d client connection(s) still open", len(self.connections), total)
