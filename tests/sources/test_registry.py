"""Plugin discovery through real entry points, and the checks applied to [sources.NAME] tables."""

import sys

import pytest

from uipd.config import ConfigError, from_dict
from uipd.sources.registry import PluginRegistry, build_sources, offered_topics


def test_plugins_are_found_through_installed_entry_points():
    registry = PluginRegistry.discover()
    assert registry.providers["counter"] == "counter"  # the test plugin distribution
    assert registry.providers["file"] == "file"  # bundled with uipd
    assert registry.providers["sim"] == "sim"  # plugins/uipd-sim


def test_a_broken_plugin_is_reported_and_the_others_still_load(monkeypatch):
    monkeypatch.setenv("UIPD_TESTPLUGIN_BROKEN", "1")
    monkeypatch.delitem(sys.modules, "uipd_testplugin.broken", raising=False)  # imported fine earlier
    registry = PluginRegistry.discover()
    assert [b.name for b in registry.broken] == ["broken"]
    assert "fails to import on purpose" in registry.broken[0].error
    assert "counter" in registry.types
    config = from_dict({"sources": {"x": {"plugin": "broken"}}}, file="t.toml")
    with pytest.raises(ConfigError, match="sources.x.plugin: no source plugin 'broken' .*broken: cannot import"):
        build_sources(config, registry)


def test_a_plugin_whose_hook_raises_is_reported_by_name():
    from uipd.plugin import hookimpl

    class Plugin:
        @hookimpl
        def uipd_source_types(self):
            raise RuntimeError("boom")

    registry = PluginRegistry.discover([("raiser", Plugin())])
    assert any(b.name == "raiser" and "boom" in b.error for b in registry.broken)
    assert "counter" in registry.types


def test_plugin_options_are_strict_and_errors_name_the_key():
    registry = PluginRegistry.discover()
    for table, message in [
        ({"plugin": "counter", "interval": "fast"}, "sources.c.interval: expected a number"),
        ({"plugin": "counter", "intervall": 1.0}, "sources.c: unknown key 'intervall'"),
        ({"plugin": "counter", "interval": -1.0}, "sources.c: interval must be greater than 0"),
        ({"plugin": "nope"}, "sources.c.plugin: no source plugin 'nope'"),
        ({"plugin": 3}, "sources.c.plugin: expected a string"),
        ({"plugin": "counter", "enabled": "yes"}, "sources.c.enabled: expected true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_sources(from_dict({"sources": {"c": table}}, file="t.toml"), registry)


def test_two_sources_may_not_provide_one_topic():
    config = from_dict({"sources": {"a": {"plugin": "counter"}, "b": {"plugin": "counter"}}}, file="t.toml")
    with pytest.raises(ConfigError, match="topic 'counter' is already provided by sources.a"):
        build_sources(config, PluginRegistry.discover())


def test_offered_topics_are_sources_then_server_topics():
    config = from_dict(
        {"server": {"topics": ["extra", "counter"]}, "sources": {"a": {"plugin": "counter"}, "off": {"plugin": "counter", "enabled": False}}},
        file="t.toml",
    )
    built = build_sources(config, PluginRegistry.discover())
    assert [b.name for b in built] == ["a"]
    assert offered_topics(config, built) == ["counter", "extra"]
