"""The idle reader (uipd.server.idle): parked receive loops, their pongs taken without a wake-up,
everything else handed back, and each parked connection's failure its own."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import connect, running_daemon
from uipd.server.idle import IdleReader

PONG = b"\x8a\x80\x01\x02\x03\x04"


async def test_a_parked_loop_gets_what_consume_leaves_and_is_not_woken_for_the_rest():
    reader = IdleReader()
    a, b = socket.socketpair()
    a.setblocking(False)
    got, consumed = [], []

    def consume(data: bytes) -> bool:
        if data == PONG:
            consumed.append(data)
            return True
        return False

    async def loop() -> None:
        got.append(await reader.wait(a.fileno(), consume))

    async with trio.open_nursery() as nursery:
        await nursery.start(reader.run)
        nursery.start_soon(loop)
        await trio.testing.wait_all_tasks_blocked()
        assert len(reader) == 1
        for _ in range(3):
            b.send(PONG)
            await trio.sleep(0.05)
        assert consumed == [PONG] * 3 and got == [] and len(reader) == 1  # still parked
        b.send(b"a message")
        await trio.sleep(0.05)
        assert got == [b"a message"] and len(reader) == 0  # woken, and out of the set
        nursery.start_soon(loop)
        await trio.testing.wait_all_tasks_blocked()
        b.close()  # the peer's EOF
        await trio.sleep(0.05)
        assert got[-1] == b"" and len(reader) == 0
        assert reader.consumed == 3 and reader.woken == 2
        nursery.cancel_scope.cancel()
    a.close()


async def test_cancelling_or_closing_a_parked_loop_takes_it_out_of_the_set():
    reader = IdleReader()
    pairs = [socket.socketpair() for _ in range(2)]
    outcomes: list[object] = []

    async def loop(fd: int) -> None:
        try:
            await reader.wait(fd, lambda data: False)
        except trio.ClosedResourceError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(reader.run)
        with trio.CancelScope() as scope:
            nursery.start_soon(loop, pairs[0][0].fileno())
            async with trio.open_nursery() as inner:
                inner.start_soon(loop, pairs[1][0].fileno())
                await trio.testing.wait_all_tasks_blocked()
                assert len(reader) == 2
                inner.cancel_scope.cancel()
            assert len(reader) == 1  # the cancelled one left
        reader.closing(pairs[0][0].fileno())  # its socket is about to be closed
        await trio.testing.wait_all_tasks_blocked()
        assert len(reader) == 0 and len(outcomes) == 1 and isinstance(outcomes[0], trio.ClosedResourceError)
        assert not scope.cancelled_caught
        nursery.cancel_scope.cancel()
    for a, b in pairs:
        a.close()
        b.close()


async def test_consume_raising_ends_that_loop_only_and_the_reader_goes_on():
    reader = IdleReader()
    (va, vb), (ca, cb) = socket.socketpair(), socket.socketpair()
    errors, canary = [], []

    def broken(data: bytes) -> bool:
        raise RuntimeError("a bug in one connection's handling")

    async def victim() -> None:
        try:
            await reader.wait(va.fileno(), broken)
        except RuntimeError as exc:
            errors.append(exc)

    async def canary_loop() -> None:
        while True:
            canary.append(await reader.wait(ca.fileno(), lambda data: False))

    async with trio.open_nursery() as nursery:
        await nursery.start(reader.run)
        nursery.start_soon(victim)
        nursery.start_soon(canary_loop)
        await trio.testing.wait_all_tasks_blocked()
        vb.send(b"x")
        cb.send(b"1")
        await trio.sleep(0.05)
        cb.send(b"2")
        await trio.sleep(0.05)
        assert len(errors) == 1 and canary == [b"1", b"2"]
        nursery.cancel_scope.cancel()
    for s in (va, vb, ca, cb):
        s.close()


async def test_idle_clients_pongs_are_taken_by_the_reader_and_a_canary_keeps_receiving():
    config = {"heartbeat": {"interval": 0.2, "timeout": 1.0}}
    async with running_daemon(config) as d:
        idle = [await connect(d) for _ in range(20)]  # they answer pings (auto_pong) and send nothing else
        canary = await connect(d)
        await canary.send_json({"action": "subscribe", "topics": ["accidents"]})
        await canary.recv_until(lambda m: m.get("type") == "SUBSCRIBED")

        async def keep_reading(client) -> None:
            while True:
                try:
                    await client.recv(timeout=10)
                except Exception:
                    return

        async with trio.open_nursery() as nursery:
            for client in idle:  # reading is what makes RawClient answer pings
                nursery.start_soon(keep_reading, client)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.api_port}", timeout=10) as api:
                for i in range(15):  # 1.5 s: past the heartbeat timeout, so only pongs keep them
                    r = await api.post("/api/publish", json={"topic": "accidents", "data": [{"id": f"a{i}", "n": i}]})
                    assert r.status_code == 200, r.text
                    message = await canary.recv_until(lambda m: m.get("type") == "UPDATE")
                    assert message["seq"] == i + 1
                    await trio.sleep(0.1)
            assert len(d.connections) == 21  # nobody dropped: every pong counted as a sign of life
            assert d.idle_reader.consumed >= 20  # ... and the idle ones' pongs were read without waking them
            nursery.cancel_scope.cancel()
