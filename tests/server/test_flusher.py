"""The flusher: frames queued in one scheduler round reach each client in one write pass, in order."""

import trio
import trio.testing

from tests.conftest import connect
from tests.wsclient import RawClient
from uipd.core.publish import from_api_body
from uipd.server.clock import now


async def test_publishes_of_one_round_are_written_in_one_pass_and_in_order(daemon_factory):
    async with daemon_factory({"heartbeat": {"interval": 3600, "timeout": 7200}}) as daemon:  # no pings in between
        await _one_pass(daemon)


async def _one_pass(daemon):
    clients = [await connect(daemon) for _ in range(3)]
    for client in clients:
        await client.send_json({"action": "subscribe", "topics": ["accidents"]})
        assert (await client.recv_json())["type"] == "SUBSCRIBED"
    await trio.testing.wait_all_tasks_blocked()
    rounds = daemon.flusher.rounds
    for n in range(1, 21):  # no checkpoint in between: one scheduler round
        daemon.hub.publish(from_api_body({"topic": "accidents", "data": [{"id": "a", "n": n}]}, broadcast=False), now())
    for client in clients:
        got = [(await client.recv_json())["data"][0]["n"] for _ in range(20)]
        assert got == list(range(1, 21))
    assert daemon.flusher.rounds == rounds + 1  # twenty messages, three clients: one pass


async def test_frames_sent_right_behind_the_handshake_are_read(daemon):
    """A client may send its first frames without waiting for the 101 (they arrive in the same
    packet as the request)."""
    import wsproto
    from wsproto.events import Request, TextMessage

    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = ws.send(Request(host="127.0.0.1", target="/"))
    # the frame as the client would send it once open: build it on a second, already open connection
    probe = await RawClient.connect(daemon.ws_port)
    frame = probe.ws.send(TextMessage('{"action":"ping"}'))
    await probe.aclose()
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.ws_port)
    await stream.send_all(request + frame)
    received = b""
    with trio.fail_after(5):
        while b'"PONG"' not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 101")
    await stream.aclose()


async def test_a_connection_whose_write_fails_is_dropped_and_the_others_are_served(daemon, monkeypatch):
    """A bug in one connection's write (here: an exception from its flush) ends that connection
    only: the flusher's pass goes on and the daemon keeps serving."""
    from uipd.server.connection import ClientConnection

    broken, healthy = await connect(daemon), await connect(daemon)
    for client in (broken, healthy):
        await client.send_json({"action": "subscribe", "topics": ["accidents"]})
        assert (await client.recv_json())["type"] == "SUBSCRIBED"
    broken_id = next(iter(daemon.connections))
    flush = ClientConnection.flush

    def failing_flush(self):
        if self.session.id == broken_id:
            raise RuntimeError("a bug in one connection's write")
        flush(self)

    monkeypatch.setattr(ClientConnection, "flush", failing_flush)
    daemon.hub.publish(from_api_body({"topic": "accidents", "data": [{"id": "a", "n": 1}]}, broadcast=False), now())
    assert (await healthy.recv_json())["data"][0]["n"] == 1
    assert await broken.expect_close(timeout=5) in (None, 1006)
    with trio.fail_after(5):
        while broken_id in daemon.connections:
            await trio.sleep(0.01)
    await healthy.send_json({"action": "ping"})
    assert (await healthy.recv_json())["type"] == "PONG"


async def test_a_clients_own_answers_are_written_by_its_receive_loop_without_a_pass_or_a_writer_task(daemon, monkeypatch):
    # SUBSCRIBED, PONG and an ERROR answer what the client just sent: its receive loop writes them
    # at once (a connecting dashboard waits for SUBSCRIBED), not the flusher's pass, which is kept
    # from running here: with the answers left to it, none would arrive.
    from uipd.server.flusher import Flusher

    client = await connect(daemon)
    await client.barrier()
    flusher = daemon.flusher
    starts = flusher.writer_starts
    with monkeypatch.context() as patch:
        patch.setattr(Flusher, "schedule", lambda self, connection: None)
        await client.send_json({"action": "subscribe", "topics": ["accidents"]})
        assert (await client.recv_json(timeout=2))["type"] == "SUBSCRIBED"
        await client.send_json({"action": "ping"})
        assert (await client.recv_json(timeout=2))["type"] == "PONG"
        await client.send_json({"action": "no-such-action"})
        assert (await client.recv_json(timeout=2))["type"] == "ERROR"
    assert flusher.writer_starts == starts  # no writer task either
    # the fan-out still goes through the pass, and the pass after a direct answer writes nothing twice
    daemon.hub.publish(from_api_body({"topic": "accidents", "data": [{"id": "a", "n": 1}]}, broadcast=False), now())
    assert (await client.recv_json())["data"][0]["n"] == 1
    await client.send_json({"action": "ping"})
    assert (await client.recv_json())["type"] == "PONG"
    assert flusher.writer_starts == starts


async def test_a_write_failing_in_a_clients_answer_ends_that_connection_only(daemon, monkeypatch, caplog):
    """The receive loop's write of an answer (``ClientConnection._answer``) is the connection's
    own fault boundary: a bug there drops that client with one log line, and a canary goes on
    receiving publishes and answers."""
    import logging

    from uipd.server.connection import ClientConnection
    from uipd.server.flusher import Flusher

    caplog.set_level(logging.WARNING)
    victim, canary = await connect(daemon), await connect(daemon)
    for client in (victim, canary):
        await client.barrier()
    victim_id = next(iter(daemon.connections))
    flush = ClientConnection.flush

    def failing_flush(self):
        if self.session.id == victim_id:
            raise RuntimeError("a bug in one client's answer")
        flush(self)

    with monkeypatch.context() as patch:
        patch.setattr(Flusher, "schedule", lambda self, connection: None)  # only the answer's own write runs
        patch.setattr(ClientConnection, "flush", failing_flush)
        await victim.send_json({"action": "ping"})
        assert await victim.expect_close(timeout=5) in (None, 1006)
    with trio.fail_after(5):
        while victim_id in daemon.connections:
            await trio.sleep(0.01)
    daemon.hub.publish(from_api_body({"topic": "accidents", "data": [{"id": "a", "n": 7}]}, broadcast=False), now())
    assert (await canary.recv_json())["data"][0]["n"] == 7
    await canary.send_json({"action": "ping"})
    assert (await canary.recv_json())["type"] == "PONG"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("uipd") and r.levelno >= logging.WARNING]
    assert len(ours) == 1 and victim_id in ours[0] and "write failed" in ours[0], ours


async def test_a_long_pass_lets_the_other_ready_tasks_run_between_its_slices():
    """A pass over thousands of clients is written in slices of PASS_SLICE connections, with a
    checkpoint between two: an API request or a handshake waits for a slice, not for the whole
    pass (the storm's publishes were answered in 887 ms at p50 when the pass was one piece)."""
    from uipd.server.flusher import PASS_SLICE, Flusher

    order: list[object] = []

    class Due:
        def __init__(self, n: int) -> None:
            self.n = n

        def flush(self) -> None:
            order.append(self.n)

        def fault(self, step: str, exc: BaseException | None = None) -> None:
            raise AssertionError(step)

    flusher = Flusher()
    total = 2 * PASS_SLICE + 7
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)

        async def other_task() -> None:
            while True:
                order.append("other")
                await trio.lowlevel.checkpoint()

        for n in range(total):
            flusher.schedule(Due(n))
        nursery.start_soon(other_task)
        with trio.fail_after(5):
            while sum(isinstance(x, int) for x in order) < total:
                await trio.sleep(0)
        nursery.cancel_scope.cancel()
    written = [x for x in order if isinstance(x, int)]
    assert written == list(range(total)) and flusher.rounds == 1  # one pass, in order
    for start in (0, PASS_SLICE, 2 * PASS_SLICE):  # a slice is not interrupted
        end = min(start + PASS_SLICE, total) - 1
        assert order.index(end) - order.index(start) == end - start
    # Each slice is a scheduler batch of its own, and the other task runs once in every batch
    # (before or after the slice: trio shuffles a batch), so it runs while the second slice's
    # batch runs, between the first slice's end and the third's start.
    assert "other" in order[order.index(PASS_SLICE - 1):order.index(2 * PASS_SLICE)]
