"""SourceRunner (uipd.runtime.sources) on its own: a real hub, the memory broker, inline sources."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from attrs import frozen

from uipd.cluster.factory import make_broker
from uipd.config import ConfigError, from_dict
from uipd.core.hub import Hub
from uipd.core.topics import TopicTable
from uipd.plugin import SourceType, hookimpl
from uipd.runtime.settings import hub_settings
from uipd.runtime.sources import SourceRunner
from uipd.server.clock import now
from uipd.sources.registry import CheckedConfig, PluginRegistry, check_config


@frozen
class Options:
    tag: str = ""
    topic: str = ""
    stuck: bool = False


class Tagged:
    """A source that runs until cancelled; a ``stuck`` one shields its cleanup until ``release``."""

    events: list[str] = []
    release = trio.Event()

    def __init__(self, options: Options) -> None:
        self.options = options
        self.topics = (options.topic,)

    def http_routes(self) -> dict[str, object]:
        if self.options.tag == "broken":
            raise RuntimeError("no routes today")
        return {"where": f"route of {self.options.tag}"}

    async def run(self, publisher) -> None:
        Tagged.events.append(f"start {self.options.tag}")
        publisher.ready()
        try:
            await trio.sleep_forever()
        finally:
            if self.options.stuck:
                with trio.CancelScope(shield=True):
                    await Tagged.release.wait()
            Tagged.events.append(f"end {self.options.tag}")


class Plugin:
    @hookimpl
    def uipd_source_types(self) -> list[SourceType]:
        return [SourceType("tagged", Options, Tagged)]


def checked(sources: dict[str, dict[str, object]], drain_timeout: float = 1.0) -> CheckedConfig:
    raw = {"server": {"drain_timeout": drain_timeout}, "sources": {n: {"plugin": "tagged", "topic": n, **t} for n, t in sources.items()}}
    return check_config(from_dict(raw, file="t.toml"), PluginRegistry.discover([("tagged", Plugin())]))


def runner_for(first: CheckedConfig) -> SourceRunner:
    hub = Hub(TopicTable.of(first.topics), hub_settings(first.config))
    return SourceRunner(hub, make_broker(first.config.broker, hub, now, dict), first.config)


@pytest.fixture(autouse=True)
def fresh() -> None:
    Tagged.events, Tagged.release = [], trio.Event()


async def test_a_source_is_one_entry_with_its_status_and_routes_from_plan_to_stop():
    first = checked({"a": {"tag": "a1"}, "b": {"tag": "b1"}})
    runner = runner_for(first)
    runner.plan(first.sources)
    assert [cs.name for cs in runner.configured] == ["a", "b"] and runner.route("a", "where") == "route of a1"
    async with trio.open_nursery() as nursery:
        await runner.start_all(nursery)
        assert Tagged.events == ["start a1", "start b1"] and all(s.running and s.ready for s in runner.statuses)
        assert await runner.stop("a") is True
        assert Tagged.events[-1] == "end a1"
        # stopped: its status, its config and its routes are gone together
        assert [s.name for s in runner.statuses] == ["b"] and [cs.name for cs in runner.configured] == ["b"]
        assert runner.route("a", "where") is None and runner.route("b", "where") == "route of b1"
        assert runner.stats()["b"]["running"] is True and "a" not in runner.stats()
        nursery.cancel_scope.cancel()


async def test_apply_keeps_the_unchanged_replaces_the_changed_after_it_ended_and_follows_config_order():
    first = checked({"keep": {"tag": "k"}, "change": {"tag": "c1"}, "drop": {"tag": "d"}})
    runner = runner_for(first)
    runner.plan(first.sources)
    async with trio.open_nursery() as nursery:
        await runner.start_all(nursery)
        kept = runner.statuses[0]
        second = checked({"new": {"tag": "n"}, "change": {"tag": "c2"}, "keep": {"tag": "k"}})
        assert await runner.apply(second.config, second.sources) is True
        assert [cs.name for cs in runner.configured] == ["new", "change", "keep"]
        assert runner.statuses[2] is kept and Tagged.events.count("start k") == 1
        assert Tagged.events.index("end c1") < Tagged.events.index("start c2")
        assert "end d" in Tagged.events and runner.route("drop", "where") is None
        assert runner.route("change", "where") == "route of c2" and runner.route("new", "where") == "route of n"
        nursery.cancel_scope.cancel()


async def test_a_failing_http_routes_is_a_config_error_at_plan_and_changes_nothing_at_apply():
    broken = checked({"x": {"tag": "broken"}})
    with pytest.raises(ConfigError, match=r"sources\.x: http_routes\(\) failed"):
        runner_for(broken).plan(broken.sources)
    first = checked({"a": {"tag": "a1"}})
    runner = runner_for(first)
    runner.plan(first.sources)
    async with trio.open_nursery() as nursery:
        await runner.start_all(nursery)
        second = checked({"a": {"tag": "a2"}, "x": {"tag": "broken"}})
        with pytest.raises(ConfigError):
            await runner.apply(second.config, second.sources)
        assert Tagged.events == ["start a1"] and runner.route("a", "where") == "route of a1"
        nursery.cancel_scope.cancel()


async def test_a_source_not_ending_in_time_is_not_replaced_until_it_has_ended(autojump_clock):
    first = checked({"s": {"tag": "old", "stuck": True}}, drain_timeout=5.0)
    runner = runner_for(first)
    runner.plan(first.sources)
    async with trio.open_nursery() as nursery:
        await runner.start_all(nursery)
        second = checked({"s": {"tag": "new"}}, drain_timeout=5.0)
        started = trio.current_time()
        assert await runner.apply(second.config, second.sources) is False
        assert trio.current_time() - started == pytest.approx(5.0)  # bounded by drain_timeout
        assert Tagged.events == ["start old"] and runner.configured == []
        # the next apply waits for the remembered task again instead of starting beside it
        assert await runner.apply(second.config, second.sources) is False
        Tagged.release.set()
        assert await runner.apply(second.config, second.sources) is True
        assert Tagged.events == ["start old", "end old", "start new"]
        nursery.cancel_scope.cancel()


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
