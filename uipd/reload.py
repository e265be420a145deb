"""Config reload (SIGHUP): re-read the config file and apply what can change without a restart.

No client is disconnected.  Applied:

- sources: a new ``[sources.NAME]`` is started, a removed (or disabled) one is stopped (its task's
  own cancel scope), a changed one (plugin, options, ``enabled``, ``restart_max_backoff``) is
  stopped and started again with its new options; an unchanged one keeps running untouched;
- topics: those of new sources (and new ``[server] topics``) are offered from now on; removed
  topics stay offered, with their last state, until the next restart;
- the hub's settings (``welcome``, ``default_topics``, heartbeat, rate limits, ``max_queue_bytes``,
  ``slow_consumer``, ``max_subscriptions``) for new clients and, for the byte bound, existing ones;
  the handshake checks (``paths``, origins, client limits, timeouts, ``[auth]`` tokens and keys);
- ``[api] key`` and ``max_body_bytes``; ``[log]`` level, format and per-logger levels.

Not applied (logged as needing a restart): listen addresses and ports, TLS, ``[api] dashboard``.
An invalid new config is logged and the running one kept, whole.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from uipd import logs
from uipd.auth import make_authenticator
from uipd.config import Config, ConfigError, load
from uipd.sources.registry import ConfiguredSource, build_sources, offered_topics

if TYPE_CHECKING:
    from uipd.daemon import Daemon

log = logging.getLogger(__name__)

RESTART_ONLY = (
    ("server", "host"), ("server", "port"), ("server", "tls_cert"), ("server", "tls_key"),
    ("api", "host"), ("api", "port"), ("api", "dashboard"),
)


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    return [f"{section}.{key}" for section, key in RESTART_ONLY if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)]


def prepare(daemon: Daemon) -> tuple[Config, list[ConfiguredSource], Any]:
    """Load and check the new config; raises ConfigError (nothing is changed then)."""
    new = load(daemon.config.path, daemon.overrides)
    configured = build_sources(new, daemon.registry)
    return new, configured, make_authenticator(new.auth)


async def reload(daemon: Daemon) -> bool:
    """Reload ``daemon``'s config file; True when the new config was applied."""
    log.info("reloading %s", daemon.config.path)
    await daemon.notifier.reloading()
    try:
        try:
            new, configured, authenticator = prepare(daemon)
        except ConfigError as exc:
            daemon.reloads["failed"] += 1
            log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        await apply(daemon, new, configured, authenticator)
        daemon.reloads["ok"] += 1
        return True
    finally:
        await daemon.notifier.ready(daemon.status_line())


async def apply(daemon: Daemon, new: Config, configured: list[ConfiguredSource], authenticator: Any) -> None:
    from uipd.daemon import hub_settings

    old = daemon.config
    skipped = _restart_only_changes(old, new)
    if skipped:
        log.warning("reload: %s changed: takes effect only after a restart", ", ".join(skipped))
    # What is read per handshake or per request follows daemon.config from now on.
    daemon.config = new
    daemon.authenticator = authenticator
    hub = daemon.hub
    hub.settings = hub_settings(new)
    for session in list(hub.sessions.values()):
        session.outbound.max_bytes = new.server.max_queue_bytes
    added = hub.add_topics(offered_topics(new, configured))
    if added:
        log.info("reload: now offering topic(s) %s", ", ".join(added))
    if daemon.api_app is not None:
        daemon.api_app.key = new.api.key
        daemon.api_app.max_body_bytes = new.api.max_body_bytes
    if logs.installed():  # the uipd command set logging up (not an embedding program)
        logs.setup(new.log)

    running = {cs.name: cs for cs in daemon.configured_sources}
    wanted = {cs.name: cs for cs in configured}
    keep, start = [], []
    for name, cs in wanted.items():
        current = running.get(name)
        if current is not None and current.config == cs.config:
            keep.append(current)
        else:
            start.append(cs)
    for name, current in running.items():
        if name not in wanted or any(cs.name == name for cs in start):
            log.info("reload: stopping source %s", name)
            daemon.stop_source(name)
    for cs in start:
        log.info("reload: %s source %s", "restarting" if cs.name in running else "starting", cs.name)
        await daemon.start_source(cs)
    order = {name: i for i, name in enumerate(wanted)}
    daemon.configured_sources = sorted([*keep, *start], key=lambda cs: order[cs.name])
    log.info("reload done: %d source(s) running, %d unchanged", len(daemon.configured_sources), len(keep))
