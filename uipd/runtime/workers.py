"""``[server] workers = N``: a supervisor process and N worker processes, each a whole daemon.

Why processes and Redis: a uipd daemon is one trio loop, one core.  N of them use N cores and N
descriptor limits, but only if they agree on what a client sees: the same topic state, one seq
per topic, one history to recover from, one source instance per ``run_on = "leader"`` source.
The Redis broker already gives exactly that to the nodes of a cluster (one Lua script assigns
every seq; a lease picks the node that runs a source), so every worker is simply a node of it
(node id ``<id>-w0``, ``-w1``...) and nothing new is shared between processes.  With the memory
broker there is no such place, so ``workers > 1`` is a config error there (uipd.config.load).

The supervisor (:class:`Supervisor`, this module) is small and holds no hub:

- it binds the listeners itself, one WebSocket and one API socket per worker, all with
  ``SO_REUSEPORT`` on the same port (port 0 is chosen once, by the first), and passes worker i
  its pair (``UIPD_WORKER_FDS``).  The kernel spreads new connections over the sockets, hashed
  per connection, so the workers take a share each without waking one another.  The sockets
  outlive a worker: a restarted worker accepts what queued on its socket meanwhile.  Sockets
  passed by systemd (socket activation) are shared by all workers instead;
- it restarts a worker that exits, with backoff (reset after a healthy run); a worker that
  fails at its first start with a config or start error (exit 2 or 1) stops the group with
  that exit code;
- it is each worker's ``NOTIFY_SOCKET`` (one datagram socket each): READY, STATUS, WATCHDOG and
  STOPPING come back here.  Upstream (systemd) it says READY once every worker is ready,
  STATUS with the group's clients, WATCHDOG while no running worker missed its own, RELOADING
  then READY around a SIGHUP.  A worker silent for three watchdog periods is killed and restarted;
- SIGTERM/SIGINT: forwarded to every worker, each drains its clients; the supervisor exits 0
  once all have exited, killing any left at ``drain_timeout``.  A second signal stops them at
  once (exit 130).  SIGHUP: forwarded to every worker, each reloads its config.

Workers are started in their own process group (Ctrl-C reaches the supervisor only, which
forwards it once) and get SIGTERM if the supervisor dies (PR_SET_PDEATHSIG).  What a worker
answers on ``/api/stats`` and ``/metrics`` covers the whole group: :mod:`uipd.runtime.group`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trio
from attrs import define, field

from uipd.config import Config
from uipd.core.backoff import Backoff
from uipd.runtime import systemd

log = logging.getLogger(__name__)

WORKER_ENV = "UIPD_WORKER"
"""Set in a worker's environment: its index (0..N-1)."""
FDS_ENV = "UIPD_WORKER_FDS"
"""Its listening sockets: ``ws=FD,api=FD``."""
GROUP_ENV = "UIPD_WORKER_GROUP"
"""The group's node id (the workers' ids are it plus ``-wN``): what /api/stats adds up."""
BACKLOG = 4096
HEALTHY_AFTER = 10.0
"""A worker that ran this long before it exited is restarted after the first backoff step again."""
EXIT_CODES = {1, 2}
"""A worker's exit at its first start with one of these (cannot start, config error) stops the group."""
_CLIENTS = re.compile(r"(?:draining; )?(\d+) clients")


def worker_index(environ: Mapping[str, str] = os.environ) -> int | None:
    """This process's index when it is a worker of a supervisor; None otherwise."""
    value = environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


def worker_fds(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """The listening sockets the supervisor passed to this worker, by name (``ws``, ``api``)."""
    out = {}
    for item in filter(None, environ.get(FDS_ENV, "").split(",")):
        name, _, fd = item.partition("=")
        out[name] = int(fd)
    return out


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on one port with SO_REUSEPORT (the first picks the port
    when ``port`` is 0).  Only the first address of ``host`` is used (``""``: the first
    wildcard getaddrinfo gives)."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # the port the first one got
            sock.listen(BACKLOG)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


async def _wait(process: subprocess.Popen[bytes]) -> int:
    """The process's exit code, waiting on its pidfd (no thread, no SIGCHLD handler)."""
    fd = os.pidfd_open(process.pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    return process.wait()


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, between fork and exec)
    """A worker gets SIGTERM (a drain) when the supervisor dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@define
class Worker:
    """One worker slot: the process now in it, and what it last notified."""

    index: int
    fds: dict[str, int]
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    reloading: bool = False
    status: str = ""
    last_watchdog: float = 0.0
    started: float = 0.0
    starts: int = 0
    exit_code: int | None = None

    @property
    def clients(self) -> int:
        m = _CLIENTS.match(self.status)
        return int(m.group(1)) if m else 0


@define
class Supervisor:
    config: Config
    overrides: tuple[str, ...] = ()
    notifier: systemd.Notifier = field(factory=lambda: systemd.Notifier(None))
    watchdog: float | None = None
    """Seconds between WATCHDOG=1 upstream (half of systemd's WATCHDOG_USEC); also each worker's."""
    inherited_fds: Mapping[str, int] = field(factory=dict)
    hangup_before_start: Callable[[], bool] = lambda: False
    command: Sequence[str] = (sys.executable, "-m", "uipd")
    group: str = ""
    """The group's node id: ``[broker] node_id``, or hostname-pid of the supervisor."""
    workers: list[Worker] = field(factory=list, init=False)
    interrupted: bool = field(default=False, init=False)
    exit_code: int = field(default=0, init=False)
    _stopping: bool = field(default=False, init=False)
    _sockets: list[socket.socket] = field(factory=list, init=False)
    _notify_dir: str = field(default="", init=False)
    _group_ready: trio.Event = field(factory=trio.Event, init=False)
    _done: trio.Event = field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.group:
            from uipd.cluster.redis import default_node_id  # the broker's own default: one naming rule

            self.group = self.config.broker.node_id or default_node_id()

    # -- the processes ------------------------------------------------------------------------------

    def bind(self) -> None:
        """The listeners, before any worker starts: a port in use fails here, once (exit 1)."""
        n = self.config.server.workers
        per_worker: list[dict[str, int]] = [{} for _ in range(n)]
        for name, what, host, port in (
            ("ws", "WebSocket listener", self.config.server.host, self.config.server.port),
            ("api", "HTTP API listener", self.config.api.host, self.config.api.port),
        ):
            if name in self.inherited_fds:  # systemd's socket: one, shared by every worker
                for fds in per_worker:
                    fds[name] = self.inherited_fds[name]
                continue
            try:
                socks = reuseport_sockets(host, port, n)
            except OSError as exc:
                raise OSError(exc.errno, f"{what} {host or '*'}:{port}: {exc.strerror or exc}") from None
            self._sockets += socks
            for fds, sock in zip(per_worker, socks):
                fds[name] = sock.fileno()
        self.workers = [Worker(i, fds) for i, fds in enumerate(per_worker)]

    @property
    def ports(self) -> tuple[int, int]:
        """The WebSocket and API ports (those bound here; 0 for an inherited socket)."""
        by_fd = {s.fileno(): s.getsockname()[1] for s in self._sockets}
        fds = self.workers[0].fds
        return by_fd.get(fds["ws"], 0), by_fd.get(fds["api"], 0)

    def _argv(self, index: int) -> list[str]:
        argv = [*self.command, "run", "-c", self.config.path]
        for o in self.overrides:
            argv += ["--set", o]
        return [*argv, "--set", f"broker.node_id={json.dumps(f'{self.group}-w{index}')}"]

    def _env(self, worker: Worker) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env[WORKER_ENV] = str(worker.index)
        env[GROUP_ENV] = self.group
        env[FDS_ENV] = ",".join(f"{name}={fd}" for name, fd in worker.fds.items())
        env["NOTIFY_SOCKET"] = self._notify_path(worker.index)
        if self.watchdog:
            env["WATCHDOG_USEC"] = str(int(self.watchdog * 2 * 1e6))
        return env

    def _notify_path(self, index: int) -> str:
        return str(Path(self._notify_dir) / f"w{index}.sock")

    async def _keep(self, worker: Worker) -> None:
        """Run worker ``worker`` until the group stops: start it, wait for it, restart it."""
        backoff = Backoff(0.5, 30.0)
        while not self._stopping:
            worker.ready = worker.reloading = False
            worker.status = ""
            # Popen in this thread, not trio.lowlevel.open_process: that forks from a worker
            # thread, and PR_SET_PDEATHSIG fires when the forking *thread* ends (trio's idle
            # threads end after 10 s).  A fork here takes milliseconds; the supervisor has no clients.
            worker.process = subprocess.Popen(
                self._argv(worker.index), env=self._env(worker), pass_fds=tuple(set(worker.fds.values())),
                process_group=0, preexec_fn=_die_with_parent,
            )
            worker.started = worker.last_watchdog = trio.current_time()
            worker.starts += 1
            log.info("worker %d started (pid %d)%s", worker.index, worker.process.pid, "" if worker.starts == 1 else f", restart {worker.starts - 1}")
            code = await _wait(worker.process)
            worker.exit_code = code
            worker.ready = worker.reloading = False
            ran = trio.current_time() - worker.started
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            if self._stopping:
                log.info("worker %d (pid %d) exited with %s", worker.index, worker.process.pid, how)
                return
            if not self._group_ready.is_set() and code in EXIT_CODES:
                log.error("worker %d (pid %d) could not start (exit %s): stopping", worker.index, worker.process.pid, code)
                self.exit_code = code
                self.stop()
                return
            if ran >= HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next()
            log.warning("worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s", worker.index, worker.process.pid, how, ran, delay)
            await trio.sleep(delay)

    def _running(self) -> list[Worker]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    def _signal_all(self, signum: int) -> None:
        for w in self._running():
            try:
                w.process.send_signal(signum)  # type: ignore[union-attr]
            except ProcessLookupError:  # exited meanwhile: its _keep sees it
                pass

    # -- notifications from the workers, and to systemd -----------------------------------------------

    async def _listen(self, worker: Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(self._notify_path(worker.index))
            task_status.started()
            while True:
                data = await sock.recv(4096)
                for line in data.decode(errors="replace").splitlines():
                    key, _, value = line.partition("=")
                    if key == "READY":  # its watchdog runs from now (a start under load takes seconds)
                        worker.ready, worker.reloading = True, False
                        worker.last_watchdog = trio.current_time()
                    elif key == "STOPPING":
                        worker.ready = False
                    elif key == "RELOADING":
                        worker.reloading = True
                    elif key == "WATCHDOG":
                        worker.last_watchdog = trio.current_time()
                    elif key == "STATUS":
                        worker.status = value
                self._changed()

    def _changed(self) -> None:
        if not self._group_ready.is_set() and all(w.ready for w in self.workers):
            self._group_ready.set()

    def status_line(self) -> str:
        ready = sum(1 for w in self.workers if w.ready)
        state = "draining; " if self._stopping else ""
        return f"{state}{sum(w.clients for w in self.workers)} clients, {ready}/{len(self.workers)} workers ready"

    async def _upstream(self) -> None:
        """READY once the group is ready; then STATUS, and WATCHDOG while every worker is alive."""
        await self._group_ready.wait()
        log.info("uipd workers: %d ready (WebSocket port %d, HTTP API port %d)", len(self.workers), *self.ports)
        await self.notifier.ready(self.status_line())
        period = self.watchdog
        next_status = trio.current_time()
        while True:
            now = trio.current_time()
            if period:
                healthy = True
                for w in self._running():
                    if w.ready and now - w.last_watchdog > 3 * period:
                        log.error("worker %d (pid %d) missed its watchdog for %.1f s: killing it", w.index, w.process.pid, now - w.last_watchdog)  # type: ignore[union-attr]
                        w.process.kill()  # type: ignore[union-attr]
                        healthy = False
                if healthy:
                    await self.notifier.notify("WATCHDOG=1")
            if self.notifier.enabled and now >= next_status:
                await self.notifier.notify(f"STATUS={self.status_line()}")
                next_status = now + systemd.STATUS_INTERVAL
            await trio.sleep(min(period or systemd.STATUS_INTERVAL, systemd.STATUS_INTERVAL))

    async def _reload(self) -> None:
        log.info("SIGHUP received: reloading every worker")
        await self.notifier.reloading()
        for w in self.workers:
            w.reloading = w in self._running()
        self._signal_all(signal.SIGHUP)
        with trio.move_on_after(30.0):
            while any(w.reloading for w in self.workers):
                await trio.sleep(0.05)
        await self.notifier.ready(self.status_line())

    # -- lifetime -------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self._signal_all(signal.SIGTERM)
        self._done.set()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            if self.hangup_before_start():
                await self._reload()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if self._stopping:
                        log.info("SIGHUP received while draining: ignored")
                    else:
                        await self._reload()
                elif self._stopping:
                    log.warning("second %s: stopping every worker now", signal.Signals(signum).name)
                    self.interrupted = True
                    self._signal_all(signal.SIGINT)  # the workers' own second signal: they stop at once
                else:
                    log.info("%s received: draining %d workers (at most %.1f s)", signal.Signals(signum).name, len(self.workers), self.config.server.drain_timeout)
                    await self.notifier.stopping(self.status_line())
                    self.stop()

    async def run(self) -> int:
        self._notify_dir = tempfile.mkdtemp(prefix="uipd-workers-")
        try:
            async with trio.open_nursery() as nursery:
                for w in self.workers:
                    await nursery.start(self._listen, w)
                nursery.start_soon(self._watch_signals)
                async with trio.open_nursery() as processes:
                    for w in self.workers:
                        processes.start_soon(self._keep, w)
                    nursery.start_soon(self._upstream)
                    await self._done.wait()
                    # Each worker drains its clients within 90 % of drain_timeout, then exits:
                    # one not gone by 95 % is killed, so that the group is gone within drain_timeout.
                    drain = self.config.server.drain_timeout
                    with trio.move_on_after(drain * 0.95) as scope:
                        while self._running():
                            await trio.sleep(0.02)
                    if scope.cancelled_caught:
                        left = self._running()
                        log.warning("drain time over with %d worker(s) still running: killing them", len(left))
                        self._signal_all(signal.SIGKILL)
                        with trio.move_on_after(drain * 0.04):  # reaped, and their exits logged
                            while self._running():
                                await trio.sleep(0.02)
                    processes.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        finally:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            for sock in self._sockets:
                sock.close()
        log.info("uipd stopped (%d workers)", len(self.workers))
        return 130 if self.interrupted else self.exit_code
