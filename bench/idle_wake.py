"""What waking a trio task per readable socket costs, against one poller reading every ready socket
(the idle reader, uipd/server/idle.py): N socket pairs, 20 rounds of 6 bytes to each, CPU per event.

    .venv/bin/python bench/idle_wake.py
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Awaitable, Callable

import trio

N = 2000
ROUNDS = 20
PAIRS = [socket.socketpair() for _ in range(N)]
for _a, _b in PAIRS:
    _a.setblocking(False)
    _b.setblocking(False)


async def _timed(start_readers: Callable[[trio.Nursery, list[int]], None]) -> float:
    """CPU seconds for ROUNDS rounds of one 6-byte write to every pair, until every read is done."""
    counter = [0]
    async with trio.open_nursery() as nursery:
        start_readers(nursery, counter)
        await trio.sleep(0.1)
        t = time.process_time()
        for r in range(ROUNDS):
            for _, b in PAIRS:
                os.write(b.fileno(), b"123456")
            while counter[0] < (r + 1) * N:
                await trio.sleep(0.001)
        spent = time.process_time() - t
        nursery.cancel_scope.cancel()
    return spent


def task_per_socket(nursery: trio.Nursery, counter: list[int]) -> None:
    async def reader(fd: int) -> None:
        while True:
            await trio.lowlevel.wait_readable(fd)
            os.read(fd, 16384)
            counter[0] += 1

    for a, _ in PAIRS:
        nursery.start_soon(reader, a.fileno())


def one_poller(nursery: trio.Nursery, counter: list[int]) -> None:
    epoll = select.epoll()
    for a, _ in PAIRS:
        epoll.register(a.fileno(), select.EPOLLIN)

    async def poll() -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0, 1024):
                os.read(fd, 16384)
                counter[0] += 1

    nursery.start_soon(poll)


def writes_and_reads_only() -> float:
    t = time.process_time()
    for _ in range(ROUNDS):
        for a, b in PAIRS:
            os.write(b.fileno(), b"123456")
        for a, _ in PAIRS:
            os.read(a.fileno(), 16384)
    return time.process_time() - t


def _run(how: Callable[[trio.Nursery, list[int]], None]) -> float:
    run: Callable[[], Awaitable[float]] = lambda: _timed(how)  # noqa: E731
    return trio.run(run)


if __name__ == "__main__":
    events = N * ROUNDS
    print("write+read only us/event", writes_and_reads_only() / events * 1e6)
    print("task per socket us/event", _run(task_per_socket) / events * 1e6)
    print("one poller us/event", _run(one_poller) / events * 1e6)
