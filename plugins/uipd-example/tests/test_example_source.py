"""The template's one test: its Source driven by trio's virtual clock against a fake Publisher."""

import trio

from uipd.testing import FakePublisher
from uipd_example import ExampleOptions, create


async def test_counters_tick_in_turn_and_alert_once(autojump_clock):
    source = create(ExampleOptions(topic="demo", counters=2, interval=1.0, alert_at=3))
    pub = FakePublisher(source.topics)
    with trio.move_on_after(8.5):  # 8 ticks, instantly with the virtual clock
        await source.run(pub)
    assert pub.is_ready and source.topics == ("demo",)
    assert pub.state["demo"] == {"counter-0": {"id": "counter-0", "value": 4}, "counter-1": {"id": "counter-1", "value": 4}}
    assert [data["id"] for _topic, data in pub.alerts] == ["counter-0", "counter-1"]
