"""systemd integration on trio, without libsystemd: the notify protocol and socket activation.

- ``Notifier`` sends sd_notify datagrams (``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1``,
  ``RELOADING=1``) to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); without
  that variable every call is a no-op.
- ``listen_fds`` takes the sockets systemd passed (``LISTEN_FDS``/``LISTEN_PID``/``LISTEN_FDNAMES``,
  descriptors from 3), by name: ``ws`` and ``api``.
- ``notify_loop`` refreshes ``STATUS=`` and, when ``WATCHDOG_USEC`` is set, pings the watchdog at
  half that period, but only after a probe proved that the event loop runs and the WebSocket
  accept loop still accepts connections.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import trio

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
STATUS_INTERVAL = 5.0


class Notifier:
    """Datagrams to the service manager; silent (and harmless) when not run by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.sent: list[str] = []
        """Every message sent, newest last (the last few; for logs and tests)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False (logged once at debug) if it failed."""
        if self.address is None:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(fields).encode()
        try:
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0)) as sock:
                await sock.sendto(message, address)
        except OSError as exc:
            log.debug("sd_notify %r to %s failed: %s", fields, self.address, exc)
            return False
        self.sent = [*self.sent[-31:], *fields]
        return True

    async def ready(self, status: str = "") -> None:
        await self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    async def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload; older ones ignore it.
        await self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    async def stopping(self, status: str = "") -> None:
        await self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def watchdog_period(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half ``WATCHDOG_USEC``), or None when no watchdog is set
    (or it is meant for another process: ``WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


def listen_fds(environ: Mapping[str, str] | None = None, *, unset: bool = True) -> dict[str, int]:
    """The descriptors of the listening sockets systemd passed to this process, by name (``ws``, ``api``).

    Unnamed descriptors (no ``LISTEN_FDNAMES``, or systemd's default names such as ``unknown`` or
    the socket unit's name) are taken in order: the first is ``ws``, the second ``api``.  The
    variables are removed from the environment (like sd_listen_fds) so children do not inherit
    them."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    if not pid or not count.isdigit() or pid != str(os.getpid()):
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    if unset and environ is None:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    out: dict[str, int] = {}
    unnamed = iter(("ws", "api"))
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        name = names[i] if i < len(names) else ""
        if name not in ("ws", "api"):
            name = next(unnamed, "")
            while name in out:
                name = next(unnamed, "")
        if not name:
            log.warning("socket activation: descriptor %d (%s) is not used", fd, names[i] if i < len(names) else "unnamed")
            continue
        os.set_inheritable(fd, False)
        out[name] = fd
    return out


def listener_from(fd: int) -> trio.SocketListener:
    """A trio listener on an inherited, already listening TCP socket."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def accept_probe(address: tuple[str, int], accepted: Callable[[], int], *, timeout: float = 2.0) -> bool:
    """Connect to our own WebSocket listener and wait until the accept loop has taken the
    connection (``accepted()`` moved); True when it did within ``timeout``."""
    before = accepted()
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError as exc:
            log.warning("watchdog probe: cannot connect to %s:%d: %s", address[0], address[1], exc)
            return False
        async with stream:
            while accepted() == before:
                await trio.sleep(0.01)
            return True
    log.warning("watchdog probe: the accept loop did not take a connection within %.1f s", timeout)
    return False


async def notify_loop(
    notifier: Notifier,
    status: Callable[[], str],
    probe: Callable[[], Awaitable[bool]],
    *,
    watchdog: float | None,
    status_interval: float = STATUS_INTERVAL,
) -> None:
    """Refresh ``STATUS=`` every ``status_interval`` and, when ``watchdog`` is set, send
    ``WATCHDOG=1`` every ``watchdog`` seconds after a successful ``probe``."""
    if not notifier.enabled:
        return
    next_status = trio.current_time()
    next_watchdog = trio.current_time() if watchdog else float("inf")
    while True:
        now = trio.current_time()
        if now >= next_status:
            await notifier.notify(f"STATUS={status()}")
            next_status = now + status_interval
        if now >= next_watchdog:
            if await probe():
                await notifier.notify("WATCHDOG=1")
            next_watchdog = now + watchdog  # type: ignore[operator]
        await trio.sleep_until(min(next_status, next_watchdog))
