"""The bundled ``file`` source: serves topics from a JSON file ``{"topic": [entities], ...}``.

For static inventories and benchmarks.  The file is read at start; when it changes (size or
mtime), it is read again and only the difference is published (changed entities, removed ids).
A file that cannot be read or parsed is logged and the last good state kept.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import trio
from attrs import define, field, frozen

from uipd.plugin import Publisher, SourceType, hookimpl

log = logging.getLogger(__name__)


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


@frozen
class FileOptions:
    path: str
    """The JSON file: an object mapping each topic to a list of entities with an ``id``."""
    topics: tuple[str, ...] = ()
    """The topics to serve; empty means every key of the file as it is at start."""
    poll_interval: float = field(default=1.0, validator=_positive)
    """Seconds between checks of the file for changes."""


def read_topics_file(path: str) -> dict[str, list[Any]]:
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping topics to lists of entities")
    for topic, entities in data.items():
        if not isinstance(entities, list):
            raise ValueError(f"{path}: topic {topic!r} must map to a list of entities")
    return data


def _signature(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@define
class FileSource:
    options: FileOptions
    topics: tuple[str, ...] = field(init=False)
    _initial: dict[str, list[Any]] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.options.topics:
            self.topics = self.options.topics
        else:
            # The topics must be known before the daemon starts serving, so read the file now.
            try:
                self._initial = read_topics_file(self.options.path)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read {self.options.path}: {exc}") from None
            self.topics = tuple(self._initial)

    def _publish(self, publisher: Publisher, data: dict[str, list[Any]]) -> int:
        changed = 0
        for topic in self.topics:
            if publisher.replace(topic, data.get(topic, [])) is not None:
                changed += 1
        ignored = sorted(set(data) - set(self.topics))
        if ignored:
            log.warning("%s: ignoring topics this source does not serve: %s", self.options.path, ", ".join(ignored))
        return changed

    async def run(self, publisher: Publisher) -> None:
        path = self.options.path
        signature: tuple[int, int] | None = None
        data, self._initial = self._initial, None
        while True:
            try:
                current = await trio.to_thread.run_sync(_signature, path)
                if current != signature:
                    if data is None:
                        data = await trio.to_thread.run_sync(read_topics_file, path)
                    changed = self._publish(publisher, data)
                    entities = sum(len(v) for v in data.values())
                    log.info("%s: loaded %d entities, %d topic(s) changed", path, entities, changed)
                    publisher.ready()
                    signature = current
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot load (%s); keeping the last good state", path, exc)
            data = None
            await trio.sleep(self.options.poll_interval)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("file", FileOptions, FileSource, "topics from a JSON file, republished on change")]
