"""uipd source plugin template ``example``: counters that tick, with an ALERT past a threshold.

Copy this distribution to start a plugin; docs/plugins.md walks through every line.
"""

from __future__ import annotations

import trio
from attrs import field, frozen

from uipd.plugin import Publisher, SourceType, hookimpl
from uipd.plugin_tools import positive  # attrs validators; uipd reports their message under the key


@frozen
class ExampleOptions:
    """The ``[sources.NAME]`` table (without ``plugin``), loaded strictly: unknown keys and wrong
    types are config errors naming ``sources.NAME.key``."""

    topic: str = "example"
    counters: int = field(default=3, validator=positive)
    interval: float = field(default=1.0, validator=positive)
    """Seconds between ticks."""
    alert_at: int = 10
    """An ALERT when a counter reaches this value."""


class ExampleSource:
    def __init__(self, options: ExampleOptions) -> None:
        self.options = options
        self.topics = (options.topic,)  # fixed before run(): offered to clients at connect

    async def run(self, publisher: Publisher) -> None:
        o = self.options
        # start from what a previous run left (the daemon restarts a source whose run raised)
        values = {f"counter-{i}": 0 for i in range(o.counters)}
        for ident, entity in publisher.current(o.topic).items():
            if ident in values:
                values[ident] = entity["value"]
        publisher.replace(o.topic, [{"id": k, "value": v} for k, v in values.items()])
        publisher.ready()
        tick = 0
        while True:
            await trio.sleep(o.interval)
            ident = f"counter-{tick % o.counters}"  # one counter per tick, in turn
            tick += 1
            values[ident] += 1
            publisher.update(o.topic, [{"id": ident, "value": values[ident]}])
            if values[ident] == o.alert_at:
                publisher.alert(o.topic, {"id": ident, "message": f"{ident} reached {o.alert_at}"})


def create(options: ExampleOptions) -> ExampleSource:
    return ExampleSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("example", ExampleOptions, create, "template: counters that tick, with an alert")]
