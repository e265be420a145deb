"""Loading: the TOML file, ``--set`` overrides, the sections through the strict converter, the
``[sources.NAME]`` tables, and the checks that span several keys."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uipd.config.convert import StrictValueError, structure_bool, structure_float, structure_str, structure_strict, type_name
from uipd.config.errors import ConfigError
from uipd.config.model import (
    ApiConfig, AuthConfig, BrokerConfig, Config, HeartbeatConfig, HistoryConfig, LogConfig, ServerConfig, SourceConfig,
)

_SECTIONS = {
    "server": ServerConfig, "auth": AuthConfig, "heartbeat": HeartbeatConfig, "history": HistoryConfig, "api": ApiConfig,
    "log": LogConfig, "broker": BrokerConfig,
}
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
        raise ConfigError(f"{file}: {root}: expected a table, got {type_name(table)}")
    common = {k: table[k] for k in _SOURCE_KEYS if k in table}
    if "plugin" not in common:
        raise ConfigError(f'{file}: {root}.plugin: required key missing (e.g. plugin = "sim")')
    checked: dict[str, Any] = {}
    for key, check, default in (("plugin", structure_str, None), ("enabled", structure_bool, True), ("restart_max_backoff", structure_float, 60.0)):
        try:
            checked[key] = check(common.get(key, default), type(default))
        except StrictValueError as exc:
            raise ConfigError(f"{file}: {root}.{key}: {exc}") from None
    plugin, enabled, backoff = checked["plugin"], checked["enabled"], checked["restart_max_backoff"]
    run_on = common.get("run_on", "leader")
    if run_on not in ("leader", "every-node"):
        raise ConfigError(f"{file}: {root}.run_on: expected one of 'leader', 'every-node', got {run_on!r}")
    options = {k: v for k, v in table.items() if k not in _SOURCE_KEYS}
    try:
        return SourceConfig(name, plugin, options, enabled, backoff, run_on)
    except ValueError as exc:  # a field's validator: its message starts with the key
        raise ConfigError(f"{file}: {root}: {exc}") from None


_WILDCARDS = ("", "0.0.0.0", "::")


def _hosts_overlap(a: str, b: str) -> bool:
    """Whether listeners on ``a`` and ``b`` with one port would collide: the same host, or either is
    a wildcard (``::`` takes IPv4 too on a dual-stack host)."""
    return a == b or a in _WILDCARDS or b in _WILDCARDS


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
    server, api = config.server, config.api
    if server.port == api.port != 0 and _hosts_overlap(server.host, api.host):
        raise ConfigError(f"{file}: server.port and api.port are both {api.port} (hosts {server.host!r} and {api.host!r}): the two listeners need different ports")
    hb = config.heartbeat
    if hb.timeout <= hb.interval:
        raise ConfigError(f"{file}: heartbeat.timeout ({hb.timeout}) must be longer than heartbeat.interval ({hb.interval})")
    br = config.broker
    if server.workers > 1 and br.kind != "redis":
        raise ConfigError(
            f"{file}: server.workers: {server.workers} workers need the Redis broker ([broker] kind = \"redis\"): "
            "each worker is a node of the cluster, which shares topic state, seq and history through Redis"
        )
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
