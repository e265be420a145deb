"""uipd.server.accept.BatchAccept: a storm's connections are taken from the backlog in batches
(one wake-up each), every one of them, and the listener stays the listener's."""

from __future__ import annotations

import socket

import trio
import trio.testing

from uipd.server.accept import ACCEPT_BATCH, BatchAccept, serve_listeners


async def _listener() -> tuple[trio.SocketListener, int]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=512)
    return listener, listener.socket.getsockname()[1]


def _connect(port: int, n: int) -> list[socket.socket]:
    clients = []
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"hi")
        clients.append(client)
    return clients


async def test_the_backlog_is_taken_in_batches_then_the_listener_waits():
    listener, port = await _listener()
    clients = _connect(port, ACCEPT_BATCH + 10)
    batch = BatchAccept(listener)
    try:
        first = await batch.accept()
        second = await batch.accept()
        assert len(first) == ACCEPT_BATCH and len(second) == 10  # all there, taken at once
        assert [await s.receive_some(2) for s in first + second] == [b"hi"] * (ACCEPT_BATCH + 10)
        with trio.move_on_after(0.2) as waiting:
            await batch.accept()  # nothing left: it waits for the next one
        assert waiting.cancelled_caught
        late = _connect(port, 1)
        with trio.fail_after(5):
            assert len(await batch.accept()) == 1
    finally:
        batch.detach()
    # Detached: the listener still owns its socket and accepts the trio way.
    clients += _connect(port, 1)
    with trio.fail_after(5):
        stream = await listener.accept()
    await stream.aclose()
    for s in first + second:
        await s.aclose()
    await listener.aclose()
    for client in clients + late:
        client.close()


async def test_a_closed_listener_ends_the_batch_accept_like_trios():
    listener, _ = await _listener()
    batch = BatchAccept(listener)
    batch.detach()
    closed = BatchAccept(listener)
    await listener.aclose()
    try:
        await closed.accept()
    except trio.ClosedResourceError:
        pass
    else:
        raise AssertionError("accept on a closed listener returned")
    finally:
        closed.detach()  # never close a descriptor number that may be another's by now


async def test_serve_listeners_hands_every_connection_of_a_storm_to_its_handler():
    listener, port = await _listener()
    seen: list[bytes] = []
    done = trio.Event()
    n = 3 * ACCEPT_BATCH + 5

    async def handler(stream: trio.abc.Stream) -> None:
        seen.append(await stream.receive_some(2))
        await stream.aclose()
        if len(seen) == n:
            done.set()

    async with trio.open_nursery() as nursery:
        clients = _connect(port, n)  # all waiting in the backlog before the loop starts
        nursery.start_soon(lambda: serve_listeners(handler, [listener], handler_nursery=nursery, backoff=lambda: (0.01, 0.1)))
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert seen == [b"hi"] * n
    for client in clients:
        client.close()
