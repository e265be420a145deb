"""The template's one test: its Source driven by trio's virtual clock against a fake Publisher."""

from collections.abc import Mapping
from typing import Any

import trio

from uipd_example import ExampleOptions, create


class FakePublisher:
    """Just what this source calls, in memory."""

    def __init__(self):
        self.state: dict[str, dict[str, Mapping[str, Any]]] = {"demo": {}}
        self.alerts: list[Any] = []
        self.is_ready = False

    def update(self, topic, entities=(), removed=()):
        self.state[topic].update({e["id"]: e for e in entities})
        return 1

    def replace(self, topic, entities):
        self.state[topic] = {e["id"]: e for e in entities}
        return 1

    def alert(self, topic, data):
        self.alerts.append(data)
        return 1

    def current(self, topic):
        return self.state[topic]

    def ready(self):
        self.is_ready = True


async def test_counters_tick_in_turn_and_alert_once(autojump_clock):
    source = create(ExampleOptions(topic="demo", counters=2, interval=1.0, alert_at=3))
    pub = FakePublisher()
    with trio.move_on_after(8.5):  # 8 ticks, instantly with the virtual clock
        await source.run(pub)
    assert pub.is_ready and source.topics == ("demo",)
    assert pub.state["demo"] == {"counter-0": {"id": "counter-0", "value": 4}, "counter-1": {"id": "counter-1", "value": 4}}
    assert [a["id"] for a in pub.alerts] == ["counter-0", "counter-1"]
