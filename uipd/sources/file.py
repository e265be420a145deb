"""The bundled ``file`` source: serves topics from a JSON file ``{"topic": [entities], ...}``.

For static inventories and benchmarks.  The file is read at start; when it changes (size or
mtime), it is read again and only the difference is published (changed entities, removed ids).
A file that cannot be read or parsed is logged and the last good state kept.  An entity uipd
refuses (NaN, nested too deep to encode, no usable id) keeps its last good version and is named in
the log; every other entity and topic of the file is published.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio
from attrs import define, field, frozen

from uipd.config import positive
from uipd.plugin import Publisher, SourceType, hookimpl
from uipd.plugin_tools import RepeatLog, parse_json, replace_publishable

log = logging.getLogger(__name__)


@frozen
class FileOptions:
    path: str
    """The JSON file: an object mapping each topic to a list of entities with an ``id``."""
    topics: tuple[str, ...] = ()
    """The topics to serve; empty means every key of the file as it is at start."""
    poll_interval: float = field(default=1.0, validator=positive)
    """Seconds between checks of the file for changes."""


def read_topics_file(path: str) -> dict[str, list[Any]]:
    with open(path, "rb") as f:
        # NaN and Infinity get through the parse so that the publish refuses just their entity
        data = parse_json(f.read(), non_finite=True)
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
    polls: int = field(init=False, default=0)
    """Checks of the file so far."""
    refusals: RepeatLog = field(init=False)
    """Names the entities of a load that uipd refused; a file rewritten every poll with the same
    bad entity gets a summary line per interval, not a line per load."""

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
        self.refusals = RepeatLog(self.options.path, log, events="loads with refused entities")

    def _publish(self, publisher: Publisher, data: dict[str, list[Any]]) -> int:
        """Each topic, and within it each entity, is published on its own: one that uipd refuses
        holds back nothing else (it keeps its last good version)."""
        changed = 0
        refused: list[str] = []
        for topic in self.topics:
            try:
                seq, bad = replace_publishable(publisher, topic, data.get(topic, []))
            except ValueError as exc:  # not any one entity's fault: the topic keeps its state
                refused.append(f"topic {topic!r}: {exc}")
                continue
            refused.extend(f"topic {topic!r}: {why}" for _, why in bad)
            if seq is not None:
                changed += 1
        if refused:
            more = f"; and {len(refused) - 3} more" if len(refused) > 3 else ""
            self.refusals.report(f"published all but what uipd refuses (which keeps its last good version): {'; '.join(refused[:3])}{more}")
        ignored = sorted(set(data) - set(self.topics))
        if ignored:
            log.warning("%s: ignoring topics this source does not serve: %s", self.options.path, ", ".join(ignored))
        return changed

    async def run(self, publisher: Publisher) -> None:
        path = self.options.path
        signature: tuple[int, int] | None = None
        data, self._initial = self._initial, None
        while True:
            self.refusals.flush()
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
            self.polls += 1
            await trio.sleep(self.options.poll_interval)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("file", FileOptions, FileSource, "topics from a JSON file, republished on change")]
