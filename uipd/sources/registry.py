"""Finding source plugins (entry-point group ``uipd.sources``) and building configured sources.

Each plugin is imported and asked for its source types on its own, so a plugin that fails to
import or raises in its hook is reported by name and never takes the others (or the daemon) down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points

import pluggy
from attrs import define, field, frozen

from uipd import hookspecs
from uipd.config import Config, ConfigError, SourceConfig, structure_strict
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
        try:
            source = source_type.create(options)
            topics = tuple(source.topics)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{config.path}: {root}: {exc}") from None
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
