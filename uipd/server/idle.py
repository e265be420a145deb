"""The idle reader: one task that waits for every idle connection's next bytes.

An idle client sends one thing: the pong answering our heartbeat ping, every ``[heartbeat]
interval``.  Waking its receive loop for it cost ~16 µs of trio (the task's wake through five
coroutines, trio's epoll re-armed by a system call per wait, the objects of a new wait), on top
of the read: at 19,000 clients, most of an idle daemon's CPU.  So a plain-socket connection whose
socket was drained parks its receive loop here (``WriteGate.receive_some``): its descriptor joins
one epoll set of our own (level-triggered, registered once per park), and this task, woken by
trio when that set has events, reads each ready socket itself.  What the connection need not
see (``consume``: a lone pong, counted as a sign of life) ends there; anything else (a message,
a close frame, the peer's EOF, an error) wakes the parked loop with those bytes, and the
descriptor leaves the set while the loop runs.

Lifetimes stay with the connection: its receive loop is still its one task, parked in
``wait_task_rescheduled``; cancelling it (the connection's close deadline, the drain) takes the
descriptor out of the set, and so does closing the socket (``closing``).  The reader itself
runs in the daemon's nursery for the daemon's life.  A failure while handling one descriptor
(its ``consume`` raising) is handed to that connection's loop, which ends that connection only.
Only a failure of epoll itself (``poll`` raising, which no input can cause) escapes the reader,
and then, as for the flusher, the daemon stops: its parked loops could not be read any more.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

import outcome
import trio

RECEIVE_BYTES = 16 * 1024
"""Bytes asked of a client's socket per read, here and by its receive loop: client messages are
small, and a smaller read is a smaller transient allocation per wake-up."""
MAX_EVENTS = 1024
"""Ready descriptors handled per wake-up; more are left for the next one, after a checkpoint."""

Consume = Callable[[bytes], bool]
"""Given what a parked connection's socket had: True if it was handled (nothing to wake for)."""


class IdleReader:
    __slots__ = ("_epoll", "_parked", "running", "reads", "consumed", "woken")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, tuple[trio.lowlevel.Task, Consume]] = {}
        self.running = False
        """``run`` is under way: only then may a loop park here (else it waits in trio's epoll)."""
        self.reads = 0
        """Sockets read by this task (/metrics)."""
        self.consumed = 0
        """Reads that needed no wake-up of their connection (its pongs)."""
        self.woken = 0
        """Parked receive loops woken with bytes, an EOF or an error."""

    def __len__(self) -> int:
        return len(self._parked)

    async def wait(self, fd: int, consume: Consume) -> bytes:
        """Park the calling task until ``fd`` has bytes that ``consume`` did not take; returns
        them (``b""``: the peer's EOF).  Raises ``trio.BrokenResourceError`` on a reset,
        ``trio.ClosedResourceError`` if the socket is closed meanwhile (``closing``)."""
        self._epoll.register(fd, select.EPOLLIN)
        self._parked[fd] = (trio.lowlevel.current_task(), consume)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._forget(fd)
            return trio.lowlevel.Abort.SUCCEEDED

        data: bytes = await trio.lowlevel.wait_task_rescheduled(abort)
        return data

    def closing(self, fd: int) -> None:
        """``fd`` is about to be closed: a loop parked on it is woken with ClosedResourceError
        (the descriptor leaves the set first: its number may soon be another connection's)."""
        entry = self._parked.get(fd)
        if entry is not None:
            self._forget(fd)
            trio.lowlevel.reschedule(entry[0], outcome.Error(trio.ClosedResourceError("the connection was closed")))

    def _forget(self, fd: int) -> None:
        del self._parked[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed: the kernel dropped it from the set
            pass

    def _wake(self, fd: int, task: trio.lowlevel.Task, result: outcome.Outcome[bytes]) -> None:
        self._forget(fd)
        self.woken += 1
        trio.lowlevel.reschedule(task, result)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        epoll, parked = self._epoll, self._parked
        self.running = True
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                events = epoll.poll(0, MAX_EVENTS)
                for fd, _ in events:
                    entry = parked.get(fd)
                    if entry is None:
                        continue  # left the set earlier in this pass
                    task, consume = entry
                    try:
                        data = os.read(fd, RECEIVE_BYTES)
                    except BlockingIOError:
                        continue
                    except OSError as exc:  # reset
                        self._wake(fd, task, outcome.Error(trio.BrokenResourceError(exc)))
                        continue
                    self.reads += 1
                    try:
                        if data and consume(data):
                            self.consumed += 1
                            continue
                    except Exception as exc:  # a bug in one connection's handling: that connection's loop raises it
                        self._wake(fd, task, outcome.Error(exc))
                        continue
                    self._wake(fd, task, outcome.Value(data))
                if len(events) == MAX_EVENTS:
                    await trio.lowlevel.checkpoint()
        finally:
            self.running = False
            for fd in list(parked):
                self.closing(fd)
            self._epoll.close()
