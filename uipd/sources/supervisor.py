"""Running one source: restart with backoff when it fails; it never takes the daemon down."""

from __future__ import annotations

import logging

import trio
from attrs import define

from uipd.sources.publisher import HubPublisher
from uipd.sources.registry import ConfiguredSource

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.5
_HEALTHY_AFTER = 60.0
"""A run that lasted this long resets the backoff to its first step."""


@define
class SourceStatus:
    name: str
    publisher: HubPublisher
    running: bool = False
    restarts: int = 0
    errors: int = 0
    last_error: str = ""

    @property
    def ready(self) -> bool:
        return self.publisher.ready_flag


async def supervise(cs: ConfiguredSource, status: SourceStatus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    backoff = _FIRST_BACKOFF
    task_status.started()
    log.info("source %s (plugin %s) starting; topics: %s", cs.name, cs.config.plugin, ", ".join(cs.topics))
    while True:
        started = trio.current_time()
        status.running = True
        try:
            await cs.source.run(status.publisher)
        except Exception as exc:  # any failure of plugin code: log, back off, run again
            status.errors += 1
            status.last_error = repr(exc)
            if trio.current_time() - started >= _HEALTHY_AFTER:
                backoff = _FIRST_BACKOFF
            log.error("source %s failed (%s); restarting in %.1f s", cs.name, exc, backoff, exc_info=exc)
        else:
            status.running = False
            log.info("source %s finished", cs.name)
            return
        status.running = False
        await trio.sleep(backoff)
        backoff = min(backoff * 2, cs.config.restart_max_backoff)
        status.restarts += 1
        log.info("source %s restarting (restart %d)", cs.name, status.restarts)
