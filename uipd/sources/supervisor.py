"""Running one source: restart with backoff when it fails; it never takes the daemon down."""

from __future__ import annotations

import logging

import trio
from attrs import define

from uipd.core.backoff import Backoff
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
    """True exactly while the source's task runs on this node (not while it waits to restart, nor
    once cancelled, e.g. its lease lost)."""
    leader: bool | None = None
    """With a lease (``run_on = "leader"`` in a cluster): whether this node holds it; None: no lease."""
    restarts: int = 0
    errors: int = 0
    last_error: str = ""

    @property
    def ready(self) -> bool:
        return self.publisher.ready_flag


async def supervise(cs: ConfiguredSource, status: SourceStatus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    backoff = Backoff(_FIRST_BACKOFF, cs.config.restart_max_backoff, healthy_after=_HEALTHY_AFTER)
    task_status.started()
    log.info("source %s (plugin %s) starting; topics: %s", cs.name, cs.config.plugin, ", ".join(cs.topics))
    while True:
        started = trio.current_time()
        status.running = True
        # A new run publishes from scratch: its replace() diffs against the hub, not against what
        # an earlier run (or an earlier lease tenure, another node publishing meanwhile) expected.
        status.publisher.forget(None)
        try:
            await cs.source.run(status.publisher)
        except (Exception, SystemExit) as exc:  # any failure of plugin code (a sys.exit too): log, back off, run again
            status.errors += 1
            status.last_error = repr(exc)
            delay = backoff.after_run(trio.current_time() - started)
            log.error("source %s failed (%s: %s); restarting in %.1f s", cs.name, type(exc).__name__, exc, delay, exc_info=exc)
        else:
            log.info("source %s finished", cs.name)
            return
        finally:  # cancelled too (its lease lost, a reload): not running from here on
            status.running = False
        await trio.sleep(delay)
        status.restarts += 1
        # debug: the error line above is the one line per failure (a flapping source must not
        # double the log)
        log.debug("source %s restarting (restart %d)", cs.name, status.restarts)
