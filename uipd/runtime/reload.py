"""Config reload (SIGHUP): re-read the config file and apply what can change without a restart.

No client is disconnected.  Applied:

- sources: a new ``[sources.NAME]`` is started, a removed (or disabled) one is stopped (its task's
  own cancel scope), a changed one (plugin, options, ``enabled``, ``restart_max_backoff``) is
  stopped and, once its task has ended, started again with its new options; an unchanged one
  keeps running untouched;
- topics: those of new sources (and new ``[server] topics``) are offered from now on; removed
  topics stay offered, with their last state, until the next restart;
- the hub's settings (``welcome``, ``default_topics``, heartbeat, rate limits, ``max_queue_bytes``,
  ``slow_consumer``, ``max_subscriptions``) for new clients and, for the byte bound and the rate
  limits, existing ones; ``[history]`` for new messages (what is kept is trimmed to the new bounds);
  the handshake checks (``paths``, origins, client limits, timeouts, ``[auth]`` tokens and keys);
- ``[api] key``, ``max_body_bytes``, ``allowed_origins`` and ``allowed_hosts``; ``[log]`` level, format and per-logger levels.

Not applied (logged as needing a restart): listen addresses and ports, TLS, ``[api] dashboard`` and ``request_timeout``,
``[broker]``.  An invalid new config (checked as at startup: uipd.sources.registry.check_config) is
logged and the running one kept, whole; a failure while applying is logged and counted as failed,
and the daemon keeps serving.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from uipd.runtime import logs
from uipd.config import Config, ConfigError, load
from uipd.runtime.settings import hub_settings
from uipd.sources.registry import CheckedConfig, check_config

if TYPE_CHECKING:
    from uipd.runtime.daemon import Daemon

log = logging.getLogger(__name__)

RESTART_ONLY = (
    ("server", "host"), ("server", "port"), ("server", "tls_cert"), ("server", "tls_key"), ("server", "workers"),
    ("api", "host"), ("api", "port"), ("api", "dashboard"), ("api", "request_timeout"),
)


RESTART_ONLY_SECTIONS = ("broker",)
"""Sections read only at start, every key: the broker (and its Redis session) is made once."""


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    keys = [*RESTART_ONLY, *((section, f.name) for section in RESTART_ONLY_SECTIONS for f in attrs.fields(type(getattr(old, section))))]
    return [f"{section}.{key}" for section, key in keys if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)]


def prepare(daemon: Daemon) -> CheckedConfig:
    """Load and check the new config; raises ConfigError (nothing is changed then)."""
    return check_config(load(daemon.config.path, daemon.overrides), daemon.registry)


async def reload(daemon: Daemon) -> bool:
    """Reload ``daemon``'s config file; True when the new config was applied.  Whatever fails,
    only this reload fails (logged, counted ``failed``): the daemon keeps serving."""
    log.info("reloading %s", daemon.config.path)
    await daemon.notifier.reloading()
    try:
        try:
            checked = prepare(daemon)
        except Exception as exc:  # ConfigError; anything else is plugin code or a bug, still not fatal
            daemon.reloads["failed"] += 1
            log.error("reload failed, keeping the running configuration: %s", exc if isinstance(exc, ConfigError) else repr(exc))
            return False
        try:
            complete = await apply(daemon, checked)
        except Exception as exc:
            daemon.reloads["failed"] += 1
            log.error("reload failed while applying the new configuration (partly applied; sources as listed by /api/stats): %r", exc, exc_info=exc)
            return False
        daemon.reloads["ok" if complete else "failed"] += 1  # not complete: SourceRunner.stop logged which source
        return complete
    finally:
        await daemon.notifier.ready(daemon.status_line())


async def apply(daemon: Daemon, checked: CheckedConfig) -> bool:
    """Apply ``checked``; False when a source to stop or replace had not ended in time: the others
    are applied, that one's replacement is not started (the next reload tries again)."""
    new = checked.config
    old = daemon.config
    skipped = _restart_only_changes(old, new)
    if skipped:
        log.warning("reload: %s changed: takes effect only after a restart", ", ".join(skipped))
    # What is read per handshake or per request follows the new config from now on.
    daemon.config = new
    daemon.clients.configure(new.server, checked.authenticator)
    hub = daemon.hub
    hub.apply_settings(hub_settings(new))  # connected clients too: queue bound, rate limits
    added = hub.add_topics(checked.topics)
    if added:
        log.info("reload: now offering topic(s) %s", ", ".join(added))
    if daemon.api_app is not None:
        daemon.api_app.key = new.api.key
        daemon.api_app.max_body_bytes = new.api.max_body_bytes
        daemon.api_app.allowed_origins = new.api.allowed_origins
        daemon.api_app.allowed_hosts = new.api.allowed_hosts
    if logs.installed():  # the uipd command set logging up (not an embedding program)
        logs.setup(new.log)

    return await daemon.runner.apply(new, checked.sources)
