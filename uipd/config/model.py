"""The configuration's model: one frozen attrs tree, a class per section, with the validators of
its keys (attrs ones, plus :func:`finite`) and a docstring per key (README's reference follows them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
from attrs import field, frozen


def finite(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    """attrs validator: not NaN nor +-inf.  TOML has both, and every comparison with NaN is false,
    so a NaN duration passes any bound check and then breaks whatever uses it (``round(nan)``,
    ``trio.move_on_after(nan)``, a JWT leeway that never expires a token).  No key gives infinity a
    meaning: where a limit can be turned off, 0 says so."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a finite number: {value!r}")


positive = attrs.validators.and_(finite, attrs.validators.gt(0))
"""attrs validator for a number key: finite and greater than 0 (also :mod:`uipd.plugin_tools`'s)."""
non_negative = attrs.validators.and_(finite, attrs.validators.ge(0))
"""attrs validator for a number key: finite and 0 or more."""


def _port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a port number 0-65535, got {value!r}")


def _redis_url(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    # checked at load, whatever the kind: a URL the client cannot parse would otherwise show up only
    # as "Redis unreachable" in the log of a daemon that passed check-config
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (parses the port: out of range or not a number is a ValueError)
    except ValueError as exc:
        raise ValueError(f"'{attribute.name}' must be a Redis URL: {exc}: {value!r}") from None
    if url.scheme not in ("redis", "rediss", "unix") or (url.scheme == "unix" and not url.path):
        raise ValueError(f"'{attribute.name}' must be a redis://, rediss:// or unix:///PATH URL: {value!r}")


def _paths(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    if not value:  # the first path is the one announced (dashboard, uipd tail): none would be an IndexError later
        raise ValueError(f"{attribute.name} must list at least one path, e.g. [\"/\"]")
    for p in value:
        if not p.startswith("/"):
            raise ValueError(f"{attribute.name} each path must start with '/', got {p!r}")


@frozen
class ServerConfig:
    """``[server]``: the public WebSocket listener and the per-client limits."""

    host: str = "0.0.0.0"
    port: int = field(default=5000, validator=_port)
    paths: tuple[str, ...] = field(default=("/", "/ws"), validator=_paths)
    """URL paths that accept a WebSocket handshake; any other path gets HTTP 404."""
    welcome: str = "Connected to HCMC Traffic Monitoring System"
    topics: tuple[str, ...] = ()
    """Topics offered without a source, fed only through the HTTP API."""
    default_topics: tuple[str, ...] = ("all",)
    """The subscription set of a client that never subscribes."""
    max_message_bytes: int = field(default=64 * 1024, validator=positive)
    """Largest client message (UTF-8 bytes, all its fragments together); a larger one is closed with 1009."""
    max_fragments: int = field(default=128, validator=positive)
    """Frames one client message may have (empty continuation frames count); more: closed with 1009."""
    snapshot_budget_bytes: int = field(default=128 * 1024, validator=non_negative)
    """Bytes per second of SNAPSHOTs one client may ask for (``snapshot``, ``subscribe`` with
    ``snapshot``); past it ERROR rate_limited.  0 turns the budget off."""
    snapshot_burst_bytes: int = field(default=4 * 1024 * 1024, validator=positive)
    """The snapshot budget's bucket: bytes that may be asked for at once."""
    max_queue_bytes: int = field(default=1024 * 1024, validator=positive)
    """Bytes queued for one client before the slow-consumer policy applies."""
    slow_consumer: Literal["resync", "disconnect"] = "resync"
    drain_timeout: float = field(default=5.0, validator=positive)
    """Seconds from SIGTERM/SIGINT to exit: clients get close 1001 within this time."""
    handshake_timeout: float = field(default=10.0, validator=positive)
    """Seconds a client may take to complete the opening handshake."""
    close_timeout: float = field(default=2.0, validator=positive)
    """Seconds to wait for a client's close frame, and for each write to a client being closed,
    before the TCP connection is dropped."""
    rate_limit: float = field(default=100.0, validator=non_negative)
    """Client messages per second (token bucket); 0 turns the limit off."""
    rate_burst: int = field(default=200, validator=positive)
    rate_limit_strikes: int = field(default=20, validator=positive)
    """Consecutive rate-limited messages answered with ERROR before the connection is closed 1008."""
    max_clients: int = field(default=20000, validator=positive)
    """Connected clients at most; past it the handshake is answered 503."""
    max_connections_per_ip: int = field(default=0, validator=non_negative)
    """Connections from one address at most; past it the handshake is answered 429.  0 (the
    default): no limit, since behind a load balancer or NAT every client has the same address."""
    max_subscriptions: int = field(default=256, validator=positive)
    """Topics one client may hold; a subscribe past it gets ERROR too_many_subscriptions."""
    allowed_origins: tuple[str, ...] = ()
    """When set, a handshake whose Origin header is not listed is refused with 403 (a handshake
    without Origin, from a non-browser client, is allowed)."""
    tls_cert: str = ""
    """PEM certificate chain: with tls_key, the WebSocket listener serves wss://."""
    tls_key: str = ""
    accept_backoff: float = field(default=0.05, validator=positive)
    """Seconds the accept loop waits after accept() fails for lack of descriptors or memory
    (EMFILE, ENFILE, ENOBUFS, ENOMEM); doubled at each further failure, up to accept_backoff_max."""
    accept_backoff_max: float = field(default=1.0, validator=positive)
    """The longest wait between accept() tries in such an episode: how late, at most, connections
    waiting in the backlog are taken once descriptors free up."""
    listen_backlog: int = field(default=4096, validator=positive)
    """Connections the kernel holds for the WebSocket listener before they are accepted (capped by
    ``net.core.somaxconn``); past it new ones are refused by the kernel.  Restart-only."""
    max_handshakes: int = field(default=2000, validator=non_negative)
    """Opening handshakes in progress at most; a connection accepted past it is answered HTTP 503
    with Retry-After at once, not left to time out behind the others.  0: no limit."""
    retry_after: int = field(default=5, validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(3600)))
    """Seconds in the ``Retry-After`` header of every 503 answer to a handshake (overload,
    ``max_clients``, draining)."""
    compression: bool = True
    """Negotiate permessage-deflate with clients that offer it (PROTOCOL.md section 9): each
    message is compressed once for every such client.  ``?compress=0`` declines it for one client."""
    compression_threshold: int = field(default=256, validator=non_negative)
    """Messages whose payload is smaller (bytes) go uncompressed to every client."""
    compression_level: int = field(default=1, validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(9)))
    """zlib level, 1 (fastest) to 9.  Level 1 deflates the 1.35 MB city snapshot to 11.4 % in 8 ms;
    level 6 to 9.4 % in 22 ms (docs/performance.md): every state change invalidates the cached
    snapshot, so it is compressed again for the next client, and speed wins."""
    workers: int = field(default=1, validator=positive)
    """Processes serving the WebSocket and API ports (uipd.runtime.workers).  1: one process, no
    supervisor.  More: a supervisor starts that many, each a node of the Redis broker (required:
    the workers share topic state, seq and history through it) with ``-w0``, ``-w1``... after its
    node id; the kernel spreads connections over them (SO_REUSEPORT).  Restart-only."""


@frozen
class AuthConfig:
    """``[auth]``: credentials on the WebSocket handshake (PROTOCOL.md section 6)."""

    mode: Literal["none", "token", "jwt"] = "none"
    tokens: tuple[str, ...] = ()
    token_file: str = ""
    """One token per line; blank lines and # comments are ignored."""
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_key: str = ""
    """The HS256 secret, or the RS256 public key (PEM)."""
    jwt_key_file: str = ""
    jwt_leeway: float = field(default=30.0, validator=non_negative)
    """Seconds of clock skew allowed on exp and nbf."""
    jwt_audience: str = ""
    jwt_issuer: str = ""


@frozen
class HeartbeatConfig:
    """``[heartbeat]``: WebSocket pings and dead-client detection."""

    interval: float = field(default=10.0, validator=positive)
    timeout: float = field(default=30.0, validator=positive)


@frozen
class HistoryConfig:
    """``[history]``: each topic's last messages, for recovery on reconnect (PROTOCOL.md section 8).
    A reload applies to new messages (and trims what is kept to the new bounds)."""

    size: int = field(default=1000, validator=attrs.validators.ge(0))
    """Messages kept per topic; 0 turns history off (a recovering client gets a snapshot section
    and ``alertsLost``, unless it is at the topic's head)."""
    ttl: float = field(default=300.0, validator=positive)
    """Seconds a message is kept at most."""
    max_bytes: int = field(default=32 * 1024 * 1024, validator=attrs.validators.ge(0))
    """Bytes of messages kept per topic in this process at most (the oldest go first); 0: no bound.
    The Redis stream is bounded by ``size`` only."""
    max_replay: int = field(default=500, validator=attrs.validators.ge(0))
    """Messages one topic's recovery replays at most; more: a snapshot section and ``missedAlerts``."""


@frozen
class ApiConfig:
    """``[api]``: the internal HTTP API listener."""

    host: str = "127.0.0.1"
    port: int = field(default=5001, validator=_port)
    key: str = ""
    """When set, every /api/* request needs ``Authorization: Bearer <key>``."""
    max_body_bytes: int = field(default=1024 * 1024, validator=positive)
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (``https://ops.example``) allowed to send requests besides the API's own
    (``http://`` plus the request's Host, where the dashboard comes from), e.g. behind a TLS proxy.
    A request whose Origin is neither gets 403: a web page on another site cannot publish."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (``ops.example``, no port) a request's ``Host`` may name besides the ones that
    always name this listener: an IP address, ``localhost``, ``host`` above and the machine's
    hostname.  Any other gets 421: a page on a domain rebound to this machine's address (DNS
    rebinding) is same-origin to itself, so the Origin check alone does not stop it."""
    request_timeout: float = field(default=5.0, validator=positive)
    """Seconds a client has to send a request's head (from connecting, or from the previous answer:
    also how long an idle kept-alive connection stays open) and then, again, its body (408)."""
    dashboard: bool = True
    """Serve the live city dashboard at ``GET /`` (static files shipped in ``uipd/api/static``)."""


@frozen
class LogConfig:
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    """``text``: one human-readable line per record; ``json``: one JSON object per line (ts, level, logger, msg, exc)."""
    levels: Mapping[str, Literal["debug", "info", "warning", "error"]] = field(factory=dict)
    """Per-logger levels, e.g. ``{ "uipd.server" = "debug" }`` (a logger's children follow it)."""
    repeat_interval: float = field(default=10.0, validator=positive)
    """A problem that repeats (a source's refused publishes) is logged in full once, then in at
    most one summary line per this many seconds (with the count: none is lost)."""


@frozen
class SourceConfig:
    """``[sources.NAME]``: which plugin runs, plus that plugin's own options (checked by the plugin's class)."""

    name: str
    plugin: str
    options: Mapping[str, Any]
    enabled: bool = True
    restart_max_backoff: float = field(default=60.0, validator=positive)
    """The longest wait between restarts of a failing source (the wait doubles from 0.5 s)."""
    run_on: Literal["leader", "every-node"] = "leader"
    """With the Redis broker: run on one node of the cluster at a time (a lease in Redis decides
    which) or on every node.  Without a cluster the source simply runs."""


@frozen
class BrokerConfig:
    """``[broker]``: how publishes reach every node."""

    kind: Literal["memory", "redis"] = "memory"
    """``memory``: one node; ``redis``: several nodes sharing topic state and seq through Redis."""
    url: str = field(default="redis://127.0.0.1:6379/0", validator=_redis_url)
    prefix: str = "uipd"
    """Prefix of every Redis key and channel: nodes with the same prefix form one cluster."""
    node_id: str = ""
    """This node's name in the cluster; empty: hostname-pid."""
    lease_ttl: float = field(default=5.0, validator=positive)
    """Seconds a source lease lives without renewal: how soon another node takes a source over."""
    max_pending: int = field(default=10000, validator=positive)
    """Publications waiting for Redis at most; past it a publish is refused with 503."""
    command_timeout: float = field(default=0.5, validator=positive)
    """Seconds one Redis command (or one batch of publications) may take.  Past it the broker
    counts Redis as gone: not ready, publishes refused, reconnect, clients resynced.  A lease is
    renewed every lease_ttl/3, so this may be at most that."""
    ping_interval: float = field(default=1.0, validator=positive)
    """Seconds between the broker's PINGs: a Redis that stops answering (a blackholed link) makes
    the node not ready within ping_interval + command_timeout."""
    publish_timeout: float = field(default=2.0, validator=positive)
    """Seconds an API publish waits for Redis: then 503 if it was never sent, 504 publish_unknown
    if it was sent and Redis did not answer."""
    alert_record: int = field(default=1000, validator=positive)
    """ALERT seqs Redis keeps per topic (the newest; the publish script trims the rest) so that a
    node cut off from Redis can tell, when it comes back, which messages it missed were ALERTs."""
    history_batch: int = field(default=64, validator=positive)
    """Recovering clients whose history is read from Redis in one call at most (their ranges are
    merged per topic, so a reconnect storm reads each message once)."""
    history_queue: int = field(default=10000, validator=positive)
    """Recovering clients waiting for a history read at most; past it a client is answered at once
    as if history did not reach back (a snapshot section and ``alertsLost``)."""


@frozen
class Config:
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    history: HistoryConfig = HistoryConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    broker: BrokerConfig = BrokerConfig()
    sources: tuple[SourceConfig, ...] = ()
    path: str = "<defaults>"
    """The file this came from, for messages."""
