"""The configuration: one frozen attrs tree, loaded from TOML by one strict cattrs converter.

Strict means: a wrong type is an error, never a coercion ("5000" is not a port, "all" is not a
list), an unknown key is an error, and every error names the file and the key path.
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from attrs import field, frozen
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import transform_error

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key path."""


class UnreadableFileError(ConfigError):
    """A file the configuration names cannot be read (missing, permissions).  ``uipd run`` treats it
    as a start failure of this machine (exit 1), not a wrong config (exit 2): the same file may be
    readable by the service's user and not by whoever ran the check, or the other way round."""


def read_named_file(path: str, *, file: str, key: str) -> str:
    """The text of a file named by config key ``key`` of ``file``; errors name both."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: {key}: {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise UnreadableFileError(f"{file}: {key}: cannot read {path}: {exc.strerror or exc}") from None


def tls_context(server: ServerConfig, *, file: str) -> ssl.SSLContext | None:
    """The listener's TLS context when ``tls_cert`` is set: loaded (and so checked) with the config,
    not when the listener opens, so ``uipd check-config`` finds a bad certificate or key."""
    if not server.tls_cert:
        return None
    for key in ("tls_cert", "tls_key"):  # readable first, so the message says which one is not
        read_named_file(getattr(server, key), file=file, key=f"server.{key}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        raise ConfigError(f"{file}: server.tls_cert, server.tls_key: not a PEM certificate chain and its private key: {exc.reason or exc}") from None
    except OSError as exc:
        raise UnreadableFileError(f"{file}: server.tls_cert, server.tls_key: cannot load: {exc.strerror or exc}") from None
    return context


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a port number 0-65535, got {value!r}")


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
    max_message_bytes: int = field(default=64 * 1024, validator=_positive)
    """Largest client message (UTF-8 bytes, all its fragments together); a larger one is closed with 1009."""
    max_fragments: int = field(default=128, validator=_positive)
    """Frames one client message may have (empty continuation frames count); more: closed with 1009."""
    snapshot_budget_bytes: int = field(default=128 * 1024, validator=_non_negative)
    """Bytes per second of SNAPSHOTs one client may ask for (``snapshot``, ``subscribe`` with
    ``snapshot``); past it ERROR rate_limited.  0 turns the budget off."""
    snapshot_burst_bytes: int = field(default=4 * 1024 * 1024, validator=_positive)
    """The snapshot budget's bucket: bytes that may be asked for at once."""
    max_queue_bytes: int = field(default=1024 * 1024, validator=_positive)
    """Bytes queued for one client before the slow-consumer policy applies."""
    slow_consumer: Literal["resync", "disconnect"] = "resync"
    drain_timeout: float = field(default=5.0, validator=_positive)
    """Seconds from SIGTERM/SIGINT to exit: clients get close 1001 within this time."""
    handshake_timeout: float = field(default=10.0, validator=_positive)
    """Seconds a client may take to complete the opening handshake."""
    close_timeout: float = field(default=2.0, validator=_positive)
    """Seconds to wait for a client's close frame, and for each write to a client being closed,
    before the TCP connection is dropped."""
    rate_limit: float = field(default=100.0, validator=_non_negative)
    """Client messages per second (token bucket); 0 turns the limit off."""
    rate_burst: int = field(default=200, validator=_positive)
    rate_limit_strikes: int = field(default=20, validator=_positive)
    """Consecutive rate-limited messages answered with ERROR before the connection is closed 1008."""
    max_clients: int = field(default=20000, validator=_positive)
    """Connected clients at most; past it the handshake is answered 503."""
    max_connections_per_ip: int = field(default=0, validator=_non_negative)
    """Connections from one address at most; past it the handshake is answered 429.  0 (the
    default): no limit, since behind a load balancer or NAT every client has the same address."""
    max_subscriptions: int = field(default=256, validator=_positive)
    """Topics one client may hold; a subscribe past it gets ERROR too_many_subscriptions."""
    allowed_origins: tuple[str, ...] = ()
    """When set, a handshake whose Origin header is not listed is refused with 403 (a handshake
    without Origin, from a non-browser client, is allowed)."""
    tls_cert: str = ""
    """PEM certificate chain: with tls_key, the WebSocket listener serves wss://."""
    tls_key: str = ""
    accept_backoff: float = field(default=0.05, validator=_positive)
    """Seconds the accept loop waits after accept() fails for lack of descriptors or memory
    (EMFILE, ENFILE, ENOBUFS, ENOMEM); doubled at each further failure, up to accept_backoff_max."""
    accept_backoff_max: float = field(default=1.0, validator=_positive)
    """The longest wait between accept() tries in such an episode: how late, at most, connections
    waiting in the backlog are taken once descriptors free up."""


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
    jwt_leeway: float = field(default=30.0, validator=_non_negative)
    """Seconds of clock skew allowed on exp and nbf."""
    jwt_audience: str = ""
    jwt_issuer: str = ""


@frozen
class HeartbeatConfig:
    """``[heartbeat]``: WebSocket pings and dead-client detection."""

    interval: float = field(default=10.0, validator=_positive)
    timeout: float = field(default=30.0, validator=_positive)


@frozen
class ApiConfig:
    """``[api]``: the internal HTTP API listener."""

    host: str = "127.0.0.1"
    port: int = field(default=5001, validator=_port)
    key: str = ""
    """When set, every /api/* request needs ``Authorization: Bearer <key>``."""
    max_body_bytes: int = field(default=1024 * 1024, validator=_positive)
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (``https://ops.example``) allowed to send requests besides the API's own
    (``http://`` plus the request's Host, where the dashboard comes from), e.g. behind a TLS proxy.
    A request whose Origin is neither gets 403: a web page on another site cannot publish."""
    request_timeout: float = field(default=5.0, validator=_positive)
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
    repeat_interval: float = field(default=10.0, validator=_positive)
    """A problem that repeats (a source's refused publishes) is logged in full once, then in at
    most one summary line per this many seconds (with the count: none is lost)."""


@frozen
class SourceConfig:
    """``[sources.NAME]``: which plugin runs, plus that plugin's own options (checked by the plugin's class)."""

    name: str
    plugin: str
    options: Mapping[str, Any]
    enabled: bool = True
    restart_max_backoff: float = 60.0
    """The longest wait between restarts of a failing source (the wait doubles from 0.5 s)."""
    run_on: Literal["leader", "every-node"] = "leader"
    """With the Redis broker: run on one node of the cluster at a time (a lease in Redis decides
    which) or on every node.  Without a cluster the source simply runs."""


@frozen
class BrokerConfig:
    """``[broker]``: how publishes reach every node."""

    kind: Literal["memory", "redis"] = "memory"
    """``memory``: one node; ``redis``: several nodes sharing topic state and seq through Redis."""
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "uipd"
    """Prefix of every Redis key and channel: nodes with the same prefix form one cluster."""
    node_id: str = ""
    """This node's name in the cluster; empty: hostname-pid."""
    lease_ttl: float = field(default=5.0, validator=_positive)
    """Seconds a source lease lives without renewal: how soon another node takes a source over."""
    max_pending: int = field(default=10000, validator=_positive)
    """Publications waiting for Redis at most; past it a publish is refused with 503."""
    command_timeout: float = field(default=0.5, validator=_positive)
    """Seconds one Redis command (or one batch of publications) may take.  Past it the broker
    counts Redis as gone: not ready, publishes refused, reconnect, clients resynced.  A lease is
    renewed every lease_ttl/3, so this may be at most that."""
    ping_interval: float = field(default=1.0, validator=_positive)
    """Seconds between the broker's PINGs: a Redis that stops answering (a blackholed link) makes
    the node not ready within ping_interval + command_timeout."""
    publish_timeout: float = field(default=2.0, validator=_positive)
    """Seconds an API publish waits for Redis: then 503 if it was never sent, 504 publish_unknown
    if it was sent and Redis did not answer."""


@frozen
class Config:
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    broker: BrokerConfig = BrokerConfig()
    sources: tuple[SourceConfig, ...] = ()
    path: str = "<defaults>"
    """The file this came from, for messages."""


# -- the strict converter ----------------------------------------------------------------------


class _StrictValueError(ValueError):
    pass


def _type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__
    )


def _structure_str(v: Any, _: type) -> str:
    if not isinstance(v, str):
        raise _StrictValueError(f"expected a string, got {_type_name(v)} ({v!r})")
    return v


def _structure_int(v: Any, _: type) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _StrictValueError(f"expected an integer, got {_type_name(v)} ({v!r})")
    return v


def _structure_float(v: Any, _: type) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _StrictValueError(f"expected a number, got {_type_name(v)} ({v!r})")
    return float(v)


def _structure_bool(v: Any, _: type) -> bool:
    if not isinstance(v, bool):
        raise _StrictValueError(f"expected true or false, got {_type_name(v)} ({v!r})")
    return v


def _is_sequence_type(t: Any) -> bool:
    origin = get_origin(t)
    return origin in (tuple, list, Sequence) and not (origin is tuple and len(get_args(t)) == 2 and get_args(t)[1] is not Ellipsis)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)

    def sequence_hook(t: Any) -> Any:
        (item,) = get_args(t)[:1] or (Any,)
        origin = get_origin(t)
        make = tuple if origin in (tuple, Sequence) else list

        def structure(v: Any, _: Any) -> Any:
            if not isinstance(v, (list, tuple)):
                raise _StrictValueError(f"expected an array, got {_type_name(v)} ({v!r})")
            errors = []
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(conv.structure(x, item))
                except Exception as e:  # collected so every bad element is reported
                    e.__notes__ = [*getattr(e, "__notes__", []), cattrs.errors.IterableValidationNote(f"index {i}", i, item)]
                    errors.append(e)
            if errors:
                raise IterableValidationError("bad array elements", errors, t)
            return make(out)

        return structure

    conv.register_structure_hook_factory(_is_sequence_type, sequence_hook)

    def literal_hook(t: Any) -> Any:
        allowed = get_args(t)

        def structure(v: Any, _: Any) -> Any:
            if v not in allowed or type(v) is not type(allowed[0]):
                raise _StrictValueError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {v!r}")
            return v

        return structure

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, literal_hook)
    return conv


converter = _make_converter()


def _format(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _StrictValueError):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = sorted(exc.extra_fields)
        return ("unknown key " if len(keys) == 1 else "unknown keys ") + ", ".join(repr(k) for k in keys)
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ValueError):
        return str(exc)
    return f"invalid value ({exc})"


def _messages(exc: BaseException, root: str) -> list[str]:
    out = []
    for line in transform_error(exc, path="$", format_exception=_format):
        message, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        path = f"{root}.{path}" if root and path else (root or path)
        out.append(f"{path}: {message}" if path else message)
    return out


def structure_strict(data: Any, cls: type[T], *, file: str, root: str) -> T:
    """Load ``data`` into ``cls`` with the strict converter; raise ConfigError naming file and key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {root}: expected a table, got {_type_name(data)}")
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        raise ConfigError(f"{file}: " + "; ".join(_messages(exc, root))) from None
    except (ValueError, TypeError) as exc:  # an attrs validator: its message starts with the field
        raise ConfigError(f"{file}: {root}: {exc}") from None


# -- loading -------------------------------------------------------------------------------------

_SECTIONS = {"server": ServerConfig, "auth": AuthConfig, "heartbeat": HeartbeatConfig, "api": ApiConfig, "log": LogConfig, "broker": BrokerConfig}
_SOURCE_KEYS = {"plugin", "enabled", "restart_max_backoff", "run_on"}


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set section.key=value`` (value in TOML syntax) to the raw table."""
    key, sep, value = assignment.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or not all(path) or len(path) < 2:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            f"--set {assignment!r}: the value must be TOML, e.g. {key}=5000 or {key}=\"text\" (quote strings)"
        ) from None
    table = raw
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a table")
    table[path[-1]] = parsed


def _source(name: str, table: Any, file: str) -> SourceConfig:
    root = f"sources.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {root}: expected a table, got {_type_name(table)}")
    common = {k: table[k] for k in _SOURCE_KEYS if k in table}
    if "plugin" not in common:
        raise ConfigError(f'{file}: {root}.plugin: required key missing (e.g. plugin = "sim")')
    checked: dict[str, Any] = {}
    for key, check, default in (("plugin", _structure_str, None), ("enabled", _structure_bool, True), ("restart_max_backoff", _structure_float, 60.0)):
        try:
            checked[key] = check(common.get(key, default), type(default))
        except _StrictValueError as exc:
            raise ConfigError(f"{file}: {root}.{key}: {exc}") from None
    plugin, enabled, backoff = checked["plugin"], checked["enabled"], checked["restart_max_backoff"]
    if backoff <= 0:
        raise ConfigError(f"{file}: {root}.restart_max_backoff: must be greater than 0, got {backoff!r}")
    run_on = common.get("run_on", "leader")
    if run_on not in ("leader", "every-node"):
        raise ConfigError(f"{file}: {root}.run_on: expected one of 'leader', 'every-node', got {run_on!r}")
    options = {k: v for k, v in table.items() if k not in _SOURCE_KEYS}
    return SourceConfig(name, plugin, options, enabled, backoff, run_on)


def from_dict(raw: dict[str, Any], *, file: str = "<config>") -> Config:
    unknown = sorted(set(raw) - set(_SECTIONS) - {"sources"})
    if unknown:
        raise ConfigError(f"{file}: unknown section(s) {', '.join(repr(u) for u in unknown)}")
    sections = {name: structure_strict(raw.get(name, {}), cls, file=file, root=name) for name, cls in _SECTIONS.items()}
    sources_raw = raw.get("sources", {})
    if not isinstance(sources_raw, dict):
        raise ConfigError(f"{file}: sources: expected a table of [sources.NAME] tables")
    sources = tuple(_source(name, table, file) for name, table in sources_raw.items())
    config = Config(**sections, sources=sources, path=file)
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError(f"{file}: server: tls_cert and tls_key go together")
    hb = config.heartbeat
    if hb.timeout <= hb.interval:
        raise ConfigError(f"{file}: heartbeat.timeout ({hb.timeout}) must be longer than heartbeat.interval ({hb.interval})")
    br = config.broker
    if br.command_timeout > br.lease_ttl / 3:
        raise ConfigError(f"{file}: broker.command_timeout ({br.command_timeout}) must be at most a third of broker.lease_ttl ({br.lease_ttl}), the renewal period of a lease")
    if br.publish_timeout <= br.command_timeout:
        raise ConfigError(f"{file}: broker.publish_timeout ({br.publish_timeout}) must be longer than broker.command_timeout ({br.command_timeout})")
    return config


def load(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML file (an absent default file means defaults), apply ``--set`` overrides, validate."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_dict(raw, file=str(path))
