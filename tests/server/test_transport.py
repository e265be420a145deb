"""The transport: the write gate's ordering guarantee and the connection's one task."""

import trio
import trio.testing

from uipd.server.transport import WriteGate, check_pinned_internals


def test_the_wsproto_internals_we_rely_on_are_there():
    assert check_pinned_internals() == []


async def _stream_pair():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, client


async def test_direct_writes_then_a_partial_remainder_is_flushed_before_anything_else():
    server, client = await _stream_pair()
    gate = WriteGate(server)
    written = []
    # The client does not read, so the kernel buffers fill and a direct write is taken in part:
    # one frame cut somewhere, the frames after it not written at all.
    n = 0
    while not gate.needs_flush:
        assert gate.direct_write_possible
        batch = [bytes([n % 251]) * (1000 + 7919 * k % 30000) for k in range(1 + n % 5)]
        gate.write_now(batch)
        written.extend(batch)
        n += 1
        assert n < 10_000
    assert not gate.direct_write_possible  # the remainder must go first
    expected = b"".join(written) + b"<after>"
    received = bytearray()

    async def read_all():
        while len(received) < len(expected):
            received.extend(await client.receive_some(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await gate.send_all(b"<after>")  # e.g. a pong from trio-websocket
    assert bytes(received) == expected
    assert gate.direct_write_possible


async def test_a_write_to_a_reset_connection_is_reported_by_the_next_send():
    server, client = await _stream_pair()
    gate = WriteGate(server)
    client.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await client.aclose()  # RST
    await trio.sleep(0.05)
    for _ in range(3):
        if gate.direct_write_possible:
            gate.write_now([b"x" * 1000, b"y" * 10])
    assert gate.needs_flush
    try:
        await gate.send_all(b"y")
    except trio.BrokenResourceError:
        pass
    else:
        raise AssertionError("a broken connection was not reported")


async def test_an_idle_connection_is_one_task_and_no_handshake_state(daemon):
    from tests.conftest import connect
    from wsproto.handshake import H11Handshake

    import gc

    client = await connect(daemon)
    connection = next(iter(daemon.connections.values()))
    await trio.testing.wait_all_tasks_blocked()
    assert not connection._writing  # no writer task while nothing waits
    assert [c for c in connection.nursery.child_tasks] == []  # the receive loop is the nursery's body
    assert not any(isinstance(o, H11Handshake) and not o.client for o in gc.get_objects())
    await client.send_json({"action": "subscribe", "topics": ["weather"]})
    assert (await client.recv_json())["topics"] == ["weather"]
    await client.send_raw(b"\x89\x80\x00\x00\x00\x00")  # a ping from the client is still answered
    await client.send_json({"action": "ping"})
    assert (await client.recv_json())["type"] == "PONG"


def _server_transport() -> "WebSocketTransport":
    from wsproto.connection import Connection, ConnectionType

    from uipd.server.transport import WebSocketTransport

    return WebSocketTransport(None, Connection(ConnectionType.SERVER))  # type: ignore[arg-type]


_PONG = b"\x8a\x80" + b"\x01\x02\x03\x04"  # FIN + pong, masked, no payload, its mask key


def test_a_lone_empty_pong_at_a_frame_boundary_needs_no_parsing_and_nothing_else_is_taken_for_one():
    transport = _server_transport()
    assert transport.lone_pong(_PONG)
    assert not transport.lone_pong(_PONG + _PONG)  # two frames: parsed
    assert not transport.lone_pong(b"\x8a\x81" + b"\x01\x02\x03\x04" + b"x"[:0])  # says 1 byte of payload
    assert not transport.lone_pong(b"\x89\x80\x01\x02\x03\x04")  # a ping needs its pong
    assert not transport.lone_pong(b"\x8a\x00\x00\x00\x00\x00")  # unmasked: a violation wsproto must see
    assert not transport.lone_pong(b"\xca\x80\x01\x02\x03\x04")  # RSV1 set on a control frame: a violation
    # Half a text frame read: the same six bytes are its continuation, not a pong.
    transport.feed(b"\x81\x86\x00\x00\x00\x00ab")
    assert not transport.lone_pong(_PONG)
    transport.feed(b"cdef")
    assert transport.lone_pong(_PONG)  # the frame is complete: a boundary again
    # A pong between two fragments of one message is at a frame boundary, and the message goes on.
    (first,) = transport.feed(b"\x01\x82\x00\x00\x00\x00ab")
    assert not first.message_finished and transport.lone_pong(_PONG)
    (last,) = transport.feed(b"\x80\x82\x00\x00\x00\x00cd")
    assert last.data == "cd" and last.message_finished


def test_no_pong_is_taken_as_such_once_the_peer_has_closed():
    transport = _server_transport()
    transport.feed(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000
    assert transport.peer_close is not None and not transport.lone_pong(_PONG)
