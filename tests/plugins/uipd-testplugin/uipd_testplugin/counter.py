"""A counter source: publishes {"id": "c", "n": N} every interval; can fail its first runs."""

from __future__ import annotations

import trio
from attrs import define, frozen

from uipd.plugin import Publisher, SourceType, hookimpl


@frozen
class CounterOptions:
    topic: str = "counter"
    interval: float = 0.05
    fail_times: int = 0
    """Raise in the first N runs (after publishing once), to exercise restart with backoff."""
    alert_every: int = 0


@define
class CounterSource:
    options: CounterOptions
    runs: int = 0
    n: int = 0

    @property
    def topics(self) -> tuple[str, ...]:
        return (self.options.topic,)

    async def run(self, publisher: Publisher) -> None:
        self.runs += 1
        while True:
            self.n += 1
            publisher.update(self.options.topic, [{"id": "c", "n": self.n, "run": self.runs}])
            if self.options.alert_every and self.n % self.options.alert_every == 0:
                publisher.alert(self.options.topic, {"n": self.n})
            if self.runs <= self.options.fail_times:
                raise RuntimeError(f"counter failing on purpose (run {self.runs})")
            await trio.sleep(self.options.interval)


def create(options: CounterOptions) -> CounterSource:
    if options.interval <= 0:
        raise ValueError("interval must be greater than 0")
    return CounterSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("counter", CounterOptions, create, "a counter for tests")]
