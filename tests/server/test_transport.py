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


def _masked_close(payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x88, 0x80 | len(payload)]) + mask + masked


def _wsproto_reply(data: bytes):
    """What wsproto makes of ``data`` read after our close: (events, state, violation)."""
    transport = _server_transport()
    transport.close_frame(1001, "server shutting down")
    events = transport.feed(data)
    return [(type(e).__name__, getattr(e, "code", None), getattr(e, "reason", None)) for e in events], transport.closed, transport.violation


def _lite_reply(data: bytes):
    """The same, on a connection whose frame layer was never built (an idle plain client)."""
    from uipd.server.transport import WebSocketTransport

    transport = WebSocketTransport(None, None)  # type: ignore[arg-type]
    frame = transport.close_frame(1001, "server shutting down")
    assert transport.close_sent and transport._protocol is None and not transport.open and not transport.closed
    events = transport.feed(data)
    return frame, ([(type(e).__name__, getattr(e, "code", None), getattr(e, "reason", None)) for e in events], transport.closed, transport.violation)


def test_our_close_without_a_frame_layer_is_wsprotos_frame_and_every_reply_ends_as_wsproto_would_end_it():
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection

    expected_frame = Connection(ConnectionType.SERVER).send(CloseConnection(1001, "server shutting down"))
    replies = [_masked_close(b""), _masked_close(b"\x03"), _masked_close(b"\x03\xe8" + "bye é".encode()),
               _masked_close(b"\x03\xe9\xff\xfe"),  # invalid UTF-8: 1007
               _masked_close(b"\x88\x82"[:0] + (4999).to_bytes(2, "big")), _masked_close((5000).to_bytes(2, "big")),
               _masked_close(b"\x88\x82"[:0] + b"x" * 125),  # 125 bytes, code "x" (30840): invalid
               b"\x88\x02\x03\xe8",  # unmasked: a violation
               b"\xc8\x80\x01\x02\x03\x04",  # RSV1 on a control frame
               _masked_close(b"\x03\xe8")[:5],  # half a frame: more to come
               _masked_close(b"\x03\xe8") + _PONG,  # two frames
               b"\x81\x82\x00\x00\x00\x00hi" + _masked_close(b"\x03\xe8"),  # a message before the close
               _PONG]
    replies += [_masked_close(code.to_bytes(2, "big") + b"r") for code in range(990, 5010)]
    replies += [_masked(0x88, b"\x03\xe8" + b"r" * 124), _masked(0x88, b"\x03\xe8", long_form=True)]  # over 125 bytes; the long form
    for data in replies:
        frame, lite = _lite_reply(data)
        assert frame == expected_frame
        assert lite == _wsproto_reply(data), data


def test_a_reply_read_in_two_pieces_still_ends_the_handshake():
    from uipd.server.transport import WebSocketTransport

    transport = WebSocketTransport(None, None)  # type: ignore[arg-type]
    transport.close_frame(1001, "bye")
    data = _masked_close(b"\x03\xe8ok")
    assert transport.feed(data[:3]) == [] and not transport.closed
    (event,) = transport.feed(data[3:])
    assert (event.code, event.reason) == (1000, "ok") and transport.closed and transport.peer_close is event
    assert not transport.lone_pong(_PONG)


def test_the_usual_reply_needs_no_frame_layer():
    from uipd.server.transport import WebSocketTransport

    transport = WebSocketTransport(None, None)  # type: ignore[arg-type]
    transport.close_frame(1001, "bye")
    (event,) = transport.feed(_masked_close(b"\x03\xe9"))
    assert event.code == 1001 and transport.closed and transport._protocol is None


def _masked(opcode_byte: int, payload: bytes, mask: bytes = b"\x9c\x01\x7e\x42", long_form: bool = False) -> bytes:
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n > 125 or long_form:
        head = bytes([opcode_byte, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([opcode_byte, 0x80 | n])
    return head + mask + masked


def _events(transport, data: bytes):
    return [(type(e).__name__, getattr(e, "data", None), getattr(e, "frame_finished", None), getattr(e, "message_finished", None), getattr(e, "code", None))
            for e in transport.feed(data)], transport.violation, transport.open


def test_a_whole_text_message_in_one_frame_needs_no_frame_layer_and_anything_else_is_parsed_as_wsproto_parses_it():
    from uipd.server.transport import WebSocketTransport

    subscribe = '{"action":"subscribe","topics":["accidents","weather"]}'.encode()
    cases = [_masked(0x81, subscribe), _masked(0x81, b""), _masked(0x81, "é ünïcode ✓".encode()), _masked(0x81, b"x" * 125),
             _masked(0x81, b"y" * 126), _masked(0x81, b"z" * 65535), _masked(0x81, b"short", long_form=True),  # a longer length form than needed: 1002
             _masked(0x81, b"\xff\xfe bad utf-8"), _masked(0x81, "é".encode()[:1]),  # invalid, or cut, UTF-8: 1007
             _masked(0x01, b"first fragment"), _masked(0xC1, b"rsv1 without the extension"), subscribe.join([b"\x81\x05", b""]),  # unmasked
             _masked(0x81, subscribe)[:10], _masked(0x81, subscribe) + _PONG, _masked(0x82, b"binary"), _masked(0x89, b"ping")]
    for data in cases:
        lite = WebSocketTransport(None, None)  # type: ignore[arg-type]
        assert _events(lite, data) == _events(_server_transport(), data), data
    # the usual subscribe builds nothing, and what follows it is still read from a frame boundary
    lite = WebSocketTransport(None, None)  # type: ignore[arg-type]
    (event,) = lite.feed(_masked(0x81, subscribe))
    assert event.data == subscribe.decode() and lite._protocol is None and lite.lone_pong(_PONG)
    (event,) = lite.feed(_masked(0x81, b"second"))
    assert event.data == "second" and lite._protocol is None
    assert [type(e).__name__ for e in lite.feed(_masked(0x89, b"ping"))] == ["Ping"] and lite._protocol is not None


def test_bytes_after_the_close_handshake_are_refused_as_wsproto_refuses_them():
    import pytest
    from wsproto.utilities import LocalProtocolError

    from uipd.server.transport import WebSocketTransport

    for transport in (WebSocketTransport(None, None), _server_transport()):  # type: ignore[arg-type]
        transport.close_frame(1001, "bye")
        transport.feed(_masked_close(b"\x03\xe8"))
        assert transport.closed
        with pytest.raises(LocalProtocolError):
            transport.feed(_masked(0x81, b""))
        assert transport.closed


def test_our_cached_close_frame_is_wsprotos_for_each_code_and_its_type():
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection
    from wsproto.frame_protocol import CloseReason

    from uipd.server.transport import server_close_frame

    for code in (CloseReason.NO_STATUS_RCVD, 1005, 1000, CloseReason.NORMAL_CLOSURE, 4001):
        expected = Connection(ConnectionType.SERVER).send(CloseConnection(code, ""))
        assert server_close_frame(code, "") == expected, code
