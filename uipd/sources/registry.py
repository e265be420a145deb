"""Finding source plugins (entry-point group ``uipd.sources``) and building configured sources.

Each plugin is imported and asked for its source types on its own, so a plugin that fails to
import or raises in its hook is reported by name and never takes the others (or the daemon) down.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from importlib.metadata import entry_points

import pluggy
from attrs import define, field, frozen

from uipd import hookspecs
from uipd.runtime.auth import Authenticator, make_authenticator
from uipd.config import Config, ConfigError, SourceConfig, structure_strict, tls_context
from uipd.core.subscriptions import ALL
from uipd.plugin import Source, SourceType

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "uipd.sources"


@frozen
class BrokenPlugin:
    name: str
    error: str


@define
class PluginRegistry:
    types: dict[str, SourceType] = field(factory=dict)
    providers: dict[str, str] = field(factory=dict)
    """Source type name -> the plugin (entry-point name) that provides it."""
    broken: list[BrokenPlugin] = field(factory=list)

    @classmethod
    def discover(cls, extra_plugins: Sequence[tuple[str, object]] = ()) -> PluginRegistry:
        """Load every ``uipd.sources`` entry point (and ``extra_plugins``, for embedding and tests)."""
        registry = cls()
        pm = pluggy.PluginManager("uipd")
        pm.add_hookspecs(hookspecs)
        candidates: list[tuple[str, object]] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                candidates.append((ep.name, ep.load()))
            except Exception as exc:  # a broken plugin is reported, not fatal
                registry._broken(ep.name, f"cannot import {ep.value}: {exc!r}")
        candidates.extend(extra_plugins)
        for name, module in candidates:
            if pm.has_plugin(name):
                registry._broken(name, "another plugin is registered under the same name")
                continue
            try:
                pm.register(module, name=name)
            except Exception as exc:
                registry._broken(name, f"cannot register: {exc}")
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            registry._broken(exc.plugin_name, str(exc))
            pm.unregister(name=exc.plugin_name)
        for impl in pm.hook.uipd_source_types.get_hookimpls():
            try:
                provided = list(impl.function())
                for source_type in provided:
                    if not isinstance(source_type, SourceType):
                        raise TypeError(f"uipd_source_types returned {source_type!r}, not a SourceType")
            except Exception as exc:
                registry._broken(impl.plugin_name, f"uipd_source_types() failed: {exc!r}")
                continue
            for source_type in provided:
                if source_type.name in registry.types:
                    registry._broken(
                        impl.plugin_name,
                        f"source type {source_type.name!r} is already provided by {registry.providers[source_type.name]}",
                    )
                    continue
                registry.types[source_type.name] = source_type
                registry.providers[source_type.name] = impl.plugin_name
        return registry

    def _broken(self, name: str, error: str) -> None:
        log.error("plugin %s is not usable: %s", name, error)
        self.broken.append(BrokenPlugin(name, error))


@frozen
class ConfiguredSource:
    name: str
    config: SourceConfig
    source: Source
    topics: tuple[str, ...]


def _create(source_type: SourceType, options: object, sc: SourceConfig, file: str) -> tuple[Source, tuple[str, ...]]:
    """Run the plugin's ``create`` and read the source's topics.  This is plugin code: whatever it
    raises is a config error naming the source, so it stops ``uipd run`` with one line and a reload
    keeps the running config, instead of escaping into the daemon's nursery."""
    root = f"sources.{sc.name}"
    try:
        source = source_type.create(options)
    except (ValueError, OSError) as exc:  # the documented "your options are wrong"
        raise ConfigError(f"{file}: {root}: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{file}: {root}: plugin {sc.plugin!r} failed to create the source: {exc!r}") from None
    try:
        declared = source.topics
        runnable = callable(getattr(source, "run", None))
    except Exception as exc:  # no such attribute, or a property that raises
        raise ConfigError(f"{file}: {root}: plugin {sc.plugin!r} made a source whose topics (or run) cannot be read: {exc!r}") from None
    if isinstance(declared, (str, bytes)) or not isinstance(declared, (tuple, list, frozenset, set)):
        # a bare string would otherwise become one topic per character
        raise ConfigError(f"{file}: {root}: the source's topics must be a tuple of topic names, got {declared!r}")
    if not runnable:
        raise ConfigError(f"{file}: {root}: plugin {sc.plugin!r} made a source without a run(publisher) method")
    return source, tuple(declared)


def _check_topic_names(config: Config, topics: Sequence[str]) -> None:
    """Every topic the config names must be one it offers (or ``all``): an unknown name in
    ``default_topics`` would otherwise reach the hub's index and fail each client's connect."""
    known = {*topics, ALL}
    for i, topic in enumerate(config.server.default_topics):
        if topic not in known:
            offered = ", ".join([ALL, *topics])
            raise ConfigError(f"{config.path}: server.default_topics[{i}]: unknown topic {topic!r}; known topics: {offered}")


@frozen
class CheckedConfig:
    """Everything built from a config before anything runs: what startup and a reload apply."""

    config: Config
    sources: list[ConfiguredSource]
    topics: list[str]
    """Every offered topic (see :func:`offered_topics`)."""
    authenticator: Authenticator
    tls: ssl.SSLContext | None


def check_config(config: Config, registry: PluginRegistry) -> CheckedConfig:
    """Check what a config means, not only its types: its sources against their plugins, every
    topic it names, its key and certificate files (read and parsed now).  The one check behind
    ``uipd check-config``, startup and reload; raises ConfigError naming the file and the key."""
    sources = build_sources(config, registry)
    topics = offered_topics(config, sources)
    _check_topic_names(config, topics)
    authenticator = make_authenticator(config.auth, config.path)
    return CheckedConfig(config, sources, topics, authenticator, tls_context(config.server, file=config.path))


def build_sources(config: Config, registry: PluginRegistry) -> list[ConfiguredSource]:
    """Check each enabled ``[sources.NAME]`` against its plugin and create the Source objects."""
    built: list[ConfiguredSource] = []
    owners: dict[str, str] = {}
    for sc in config.sources:
        if not sc.enabled:
            continue
        root = f"sources.{sc.name}"
        source_type = registry.types.get(sc.plugin)
        if source_type is None:
            known = ", ".join(sorted(registry.types)) or "none"
            broken = [b for b in registry.broken if b.name == sc.plugin]
            why = f" (the plugin is installed but broken: {broken[0].error})" if broken else ""
            raise ConfigError(f"{config.path}: {root}.plugin: no source plugin {sc.plugin!r}{why}; installed: {known}")
        options = structure_strict(dict(sc.options), source_type.options, file=config.path, root=root)
        source, topics = _create(source_type, options, sc, config.path)
        for topic in topics:
            if not isinstance(topic, str) or not topic or topic == "all":
                raise ConfigError(f"{config.path}: {root}: the source declared an invalid topic name {topic!r}")
            if topic in owners:
                raise ConfigError(f"{config.path}: {root}: topic {topic!r} is already provided by sources.{owners[topic]}")
            owners[topic] = sc.name
        built.append(ConfiguredSource(sc.name, sc, source, topics))
    for topic in config.server.topics:
        if topic == "all" or not topic:
            raise ConfigError(f"{config.path}: server.topics: invalid topic name {topic!r}")
    return built


def offered_topics(config: Config, sources: Sequence[ConfiguredSource]) -> list[str]:
    """Every topic the server offers: sources' topics in config order, then ``[server] topics``."""
    names: list[str] = []
    for cs in sources:
        names.extend(t for t in cs.topics if t not in names)
    names.extend(t for t in config.server.topics if t not in names)
    return names
