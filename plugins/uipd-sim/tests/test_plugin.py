"""The hook, the options and the Source driven by trio against a fake Publisher."""

from __future__ import annotations

import attrs
import pytest
import trio

from uipd.config import ConfigError, structure_strict
from uipd.plugin import SourceType
from uipd.testing import FakePublisher
from uipd_sim.city import TOPICS
from uipd_sim.plugin import SimOptions, SimSource, create, uipd_source_types


def test_hook_declares_the_sim_source_type():
    (st,) = uipd_source_types()
    assert isinstance(st, SourceType)
    assert st.name == "sim" and st.options is SimOptions and st.create is create and st.description


def test_options_have_defaults_of_plain_types():
    o = SimOptions()
    for f in attrs.fields(SimOptions):
        assert type(getattr(o, f.name)) in (int, float, str, bool, tuple), f.name
    assert (o.seed, o.speed, o.cameras, o.accidents_interval, o.patterns_interval) == (20251129, 1.0, 700, 10.0, 60.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"speed": 0.0}, "speed"),
        ({"speed": -1.0}, "speed"),
        ({"cameras": 0}, "cameras"),
        ({"accidents_interval": 0.0}, "accidents_interval"),
        ({"air_quality_interval": -5.0}, "air_quality_interval"),
        ({"aqi_alert_threshold": -1}, "aqi_alert_threshold"),
    ],
)
def test_create_rejects_bad_options(changes, message):
    with pytest.raises(ValueError, match=message):
        create(SimOptions(**changes))


FLOAT_OPTIONS = [f.name for f in attrs.fields(SimOptions) if f.type in (float, "float")]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("key", FLOAT_OPTIONS)
def test_infinite_and_nan_options_are_refused_at_load(key, value):
    """An infinite interval never ticked and an infinite speed made every period 0 (a busy loop):
    the options use uipd's validators, which refuse what is not finite, as the daemon loads them."""
    assert {"speed", "accidents_interval", "congestion_interval"} <= set(FLOAT_OPTIONS)
    with pytest.raises(ConfigError, match=rf"^t.toml: sources.sim: '{key}' must be a finite number: -?(inf|nan)$"):
        structure_strict({key: value}, SimOptions, file="t.toml", root="sources.sim")


def test_topics_known_before_run_with_optional_prefix():
    assert tuple(create(SimOptions()).topics) == TOPICS
    assert create(SimOptions(topic_prefix="sim.")).topics[0] == "sim.cameras"


async def test_run_publishes_initial_state_then_ready_then_updates(autojump_clock):
    source = create(SimOptions(cameras=100))
    pub = FakePublisher(source.topics)
    with trio.move_on_after(15 * 60):  # 15 simulated minutes, instantly with the autojump clock
        await source.run(pub)
    assert pub.is_ready and pub.ready_after == set(TOPICS)
    initial = {u[0] for u in pub.updates[: len(TOPICS)]}
    assert initial == set(TOPICS)
    later = pub.updates[len(TOPICS) :]
    per_topic = {t: sum(1 for u in later if u[0] == t) for t in TOPICS}
    # ticks: accidents every 10 s, patterns every 60 s, the rest every 30 s (some ticks may change nothing)
    assert per_topic["accidents"] > 20 and per_topic["patterns"] >= 14 and per_topic["weather"] >= 29, per_topic
    assert all(per_topic.values()), per_topic
    assert len(pub.state["cameras"]) == 100


async def test_run_at_high_speed_in_real_time():
    source = create(SimOptions(speed=1000, cameras=80, topic_prefix="sim."))
    pub = FakePublisher(source.topics)
    with trio.move_on_after(1.5):
        await source.run(pub)
    topics = {u[0] for u in pub.updates[len(TOPICS) :]}
    assert topics == {"sim." + t for t in TOPICS}
    assert all(pub.state["sim." + t] for t in TOPICS)


async def test_restart_replaces_stale_state(autojump_clock):
    source = SimSource(SimOptions(cameras=30))
    pub = FakePublisher(source.topics)
    pub.update("accidents", [{"id": "stale"}])
    with trio.move_on_after(1):
        await source.run(pub)
    assert "stale" not in pub.current("accidents")
