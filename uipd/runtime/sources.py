"""The source lifecycle: every source the daemon runs, each with its config, its status and
publisher, the cancel scope of its task and the event set once that task has ended, and the HTTP
routes it serves — one collection, so that starting, stopping and a reload's replacement change
all of them together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from attrs import define, field

from uipd.cluster.lease import leases_of, run_with_lease
from uipd.config import Config, ConfigError
from uipd.core.hub import Hub
from uipd.plugin import HttpHandler
from uipd.server.clock import now
from uipd.sources.publisher import HubPublisher
from uipd.sources.registry import ConfiguredSource
from uipd.sources.supervisor import SourceStatus, supervise

log = logging.getLogger(__name__)


@define
class RunningSource:
    """One source: made from its config (nothing runs yet), then started by :meth:`SourceRunner.start`."""

    configured: ConfiguredSource
    status: SourceStatus
    routes: dict[str, HttpHandler]
    """What it serves under ``/sources/NAME/ROUTE`` of the API (its ``http_routes()``)."""
    scope: trio.CancelScope = field(factory=trio.CancelScope)
    done: trio.Event = field(factory=trio.Event)
    """Set once its task has ended (its cleanup run, its lease released)."""

    @property
    def name(self) -> str:
        return self.configured.name


@define
class SourceRunner:
    """Runs the configured sources in the daemon's nursery, each under its own cancel scope."""

    hub: Hub
    broker: Any
    """Where the sources' publishes go (uipd.cluster.factory.make_broker)."""
    config: Config
    """The config now: a reload replaces it (:meth:`apply`)."""
    observe: Callable[[float], None] = lambda seconds: None
    """Called with each publish's duration (the metrics' histogram)."""
    _sources: dict[str, RunningSource] = field(factory=dict, init=False)
    """The sources running now (or waiting to restart, or about to start), in config order."""
    _unended: dict[str, trio.Event] = field(factory=dict, init=False)
    """Sources cancelled by a reload whose task had not ended in time (see :meth:`stop`)."""
    _nursery: trio.Nursery | None = field(default=None, init=False)

    def plan(self, configured: list[ConfiguredSource]) -> None:
        """The sources :meth:`start_all` starts; raises ConfigError when a plugin's
        ``http_routes()`` fails (before anything runs, like every config error)."""
        self._sources = {cs.name: self._prepare(cs) for cs in configured}

    def _prepare(self, cs: ConfiguredSource) -> RunningSource:
        routes: dict[str, HttpHandler] = {}
        http_routes = getattr(cs.source, "http_routes", None)
        if http_routes is not None:
            try:
                routes = dict(http_routes())
            except Exception as exc:  # plugin code: a config error naming the source, not a crash
                raise ConfigError(f"{self.config.path}: sources.{cs.name}: http_routes() failed: {exc!r}") from None
        publisher = HubPublisher(
            self.hub, now, topics=frozenset(cs.topics), observe=self.observe, broker=self.broker, source=cs.name,
            refusal_log_interval=self.config.log.repeat_interval,
        )
        return RunningSource(cs, SourceStatus(cs.name, publisher), routes)

    @property
    def configured(self) -> list[ConfiguredSource]:
        return [s.configured for s in self._sources.values()]

    @property
    def statuses(self) -> list[SourceStatus]:
        return [s.status for s in self._sources.values()]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each source's state, for /api/stats."""
        return {
            s.name: {
                "running": s.running, "ready": s.ready, "leader": s.leader, "restarts": s.restarts, "errors": s.errors,
                "refused": sum(s.publisher.refused.values()),
            }
            for s in self.statuses
        }

    def route(self, source: str, route: str) -> HttpHandler | None:
        running = self._sources.get(source)
        return None if running is None else running.routes.get(route)

    async def start_all(self, nursery: trio.Nursery) -> None:
        """Start the planned sources in ``nursery`` (the daemon's), which later starts run in too."""
        self._nursery = nursery
        for source in list(self._sources.values()):
            await self.start(source)

    async def start(self, source: RunningSource) -> None:
        """Start one source's supervisor; once it has reported started it is listed as running."""
        assert self._nursery is not None
        self._sources[source.name] = source
        try:
            await self._nursery.start(self._run, source)
        except BaseException:  # it never started (e.g. its lease): not listed as running
            self._sources.pop(source.name, None)
            raise

    async def _run(self, source: RunningSource, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cs, status = source.configured, source.status
        try:
            with source.scope:
                leases = leases_of(self.broker)
                if leases is not None and cs.config.run_on == "leader":
                    # The state comes from the cluster whichever node runs the source: ready here.
                    status.publisher.ready()
                    status.leader = False

                    async def lead() -> None:  # run_with_lease runs it exactly while this node holds the lease
                        status.leader = True
                        try:
                            await supervise(cs, status)
                        finally:
                            status.leader = False

                    await run_with_lease(leases, cs.name, self.config.broker.lease_ttl, lead, task_status=task_status)
                else:
                    await supervise(cs, status, task_status=task_status)
        finally:
            status.running = False
            source.done.set()

    async def stop(self, name: str) -> bool:
        """Cancel one source's task (a reload removed or changed it) and wait until it has ended
        (its cleanup, its lease released); its topics keep their state.  The wait is bounded by
        ``[server] drain_timeout``: False (and one line naming it) when the task is still running
        then, e.g. a plugin shielding its cleanup from cancellation.  Such a task is remembered:
        a later call with that name (the next reload) waits for it again instead of letting a
        replacement run beside it.  True when no task of that name is left."""
        source = self._sources.pop(name, None)
        done = self._unended.pop(name, None)
        if source is not None:
            source.scope.cancel()
            done = source.done
        if done is None:
            return True
        timeout = self.config.server.drain_timeout
        with trio.move_on_after(timeout):
            await done.wait()
        if not done.is_set():
            self._unended[name] = done
            log.error("source %s did not end within %.1f s of its cancellation (drain_timeout); it is not restarted until it has", name, timeout)
            return False
        return True

    async def apply(self, config: Config, configured: list[ConfiguredSource]) -> bool:
        """Run ``configured`` from now on: start the new sources, stop the removed ones, replace the
        changed ones (stopped, and started again once their task has ended); an unchanged one keeps
        running untouched.  False when a source to stop or replace had not ended in time: the others
        are applied, that one's replacement is not started (the next reload tries again)."""
        self.config = config
        wanted = {cs.name: cs for cs in configured}
        running = dict(self._sources)
        changed = [cs for name, cs in wanted.items() if name not in running or running[name].configured.config != cs.config]
        # Every replacement's routes first: a failing http_routes() leaves the running sources be.
        replacements = [self._prepare(cs) for cs in changed]
        unended: list[str] = []
        try:
            for name in running:
                if name not in wanted or any(cs.name == name for cs in changed):
                    log.info("reload: stopping source %s", name)
                    # waits until the old task has ended: a changed source's replacement never runs
                    # beside it (two publishers of one topic, a port or lease held twice)
                    if not await self.stop(name):
                        unended.append(name)
            for source in replacements:
                # A source left unended by an earlier reload: its task may be over by now.
                if source.name in unended or (source.name not in running and not await self.stop(source.name)):
                    unended.append(source.name)
                    continue
                log.info("reload: %s source %s", "restarting" if source.name in running else "starting", source.name)
                await self.start(source)
        finally:
            # config order, even if a step failed: the next reload compares against what runs
            order = {name: i for i, name in enumerate(wanted)}
            self._sources = dict(sorted(self._sources.items(), key=lambda item: order.get(item[0], len(order))))
        log.info("reload done: %d source(s) running, %d unchanged", len(self._sources), len(wanted) - len(changed))
        return not unended

    async def summarise_refusals(self) -> None:
        """Log each source's summary of refused publishes once its interval is over: without this
        the end of a burst would be counted but never logged (uipd.plugin_tools.RepeatLog)."""
        while True:
            interval = self.config.log.repeat_interval
            for s in self.statuses:
                s.publisher.refusals.interval = interval  # a reload may change it
                s.publisher.refusals.flush()
            await trio.sleep(min(1.0, interval))
