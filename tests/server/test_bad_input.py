"""PROTOCOL.md section 5, every bad-input row, and one bad client never affecting another."""

import struct

import trio

from tests.conftest import api_client, connect
from tests.wsclient import RawClient


async def expect_error(client, code):
    msg = await client.recv_json()
    assert msg["type"] == "ERROR", msg
    assert msg["error"]["code"] == code, msg
    assert msg["error"]["message"]
    return msg


async def test_bad_messages_get_errors_and_the_connection_stays(daemon):
    c = await connect(daemon)
    for text, code in [
        ("not json", "bad_request"),
        ("[1,2]", "bad_request"),
        ('"subscribe"', "bad_request"),
        ("{}", "bad_request"),
        ('{"action": 5}', "bad_request"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": "subscribe"}', "bad_request"),
        ('{"action": "subscribe", "topics": "accidents"}', "bad_request"),
        ('{"action": "unsubscribe", "topics": ["a", 1]}', "bad_request"),
        ('{"action": "snapshot", "topics": {"a": 1}}', "bad_request"),
    ]:
        await c.send_text(text)
        await expect_error(c, code)
    await c.send_json({"action": "ping"})
    assert (await c.recv_json())["type"] == "PONG"


async def test_binary_frame_closes_1003(daemon):
    c = await connect(daemon)
    await c.send_bytes(b"\x00\x01")
    assert await c.expect_close() == 1003


async def test_frame_over_max_message_bytes_closes_1009(daemon_factory):
    async with daemon_factory({"server": {"max_message_bytes": 1000}}) as d:
        c = await connect(d)
        await c.send_text('{"action":"ping","pad":"' + "x" * 2000 + '"}')
        assert await c.expect_close() == 1009
        ok = await connect(d)
        await ok.send_text('{"action":"ping","pad":"' + "x" * 900 + '"}')
        assert (await ok.recv_json())["type"] == "PONG"


async def test_flood_is_rate_limited_then_closed_1008(daemon_factory):
    async with daemon_factory({"server": {"rate_limit": 5.0, "rate_burst": 5, "rate_limit_strikes": 3}}) as d:
        c = await connect(d)
        other = await connect(d)
        for _ in range(20):
            await c.send_json({"action": "ping"})
        kinds = []
        try:
            while True:
                msg = await c.recv_json()
                kinds.append(msg["type"] if msg["type"] != "ERROR" else msg["error"]["code"])
        except Exception as exc:  # the close
            code = getattr(exc, "code", None)
        assert kinds[:5] == ["PONG"] * 5
        assert kinds[5:] == ["rate_limited"] * 3
        assert code == 1008
        await other.send_json({"action": "ping"})
        assert (await other.recv_json())["type"] == "PONG"


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x00\x00\x00\x00") -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + payload  # an all-zero mask leaves the payload as is


async def test_bad_clients_never_affect_a_good_one(daemon):
    good = await connect(daemon)
    await good.send_json({"action": "subscribe", "topics": ["accidents"]})
    await good.recv_json()

    async def garbage_tcp():
        s = await trio.open_tcp_stream("127.0.0.1", daemon.ws_port)
        await s.send_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n" * 10)
        await trio.aclose_forcefully(s)

    async def abrupt_close():
        c = await connect(daemon)
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.aclose()

    async def bad_frames():
        for frame in (
            _frame(0x1, b"\xff\xfe not utf-8"),  # invalid UTF-8 text
            _frame(0x3, b"reserved opcode"),
            _frame(0x9, b"x" * 10, fin=False),  # fragmented control frame
            b"\x81\xff" + b"\x7f" * 8 + b"\x00" * 4,  # 64-bit length with the top bit set
            _frame(0x1, b'{"action":"ping"}')[:5],  # truncated, then EOF
        ):
            c = await connect(daemon)
            await c.send_raw(frame)
            await c.aclose()

    async def messages_then_ping_while_closing():
        # trio-websocket issue #184: a client that sends several messages and then a ping
        # while the server is closing it used to crash the whole server.
        for _ in range(5):
            c = await connect(daemon)
            for _ in range(5):
                await c.send_bytes(b"binary: the server closes 1003")
            await c.send_raw(_frame(0x9, b"ping"))
            await c.send_json({"action": "ping"})
            await c.aclose()

    async with trio.open_nursery() as nursery:
        for job in (garbage_tcp, abrupt_close, bad_frames, messages_then_ping_while_closing):
            for _ in range(3):
                nursery.start_soon(job)

    async with api_client(daemon) as http:
        r = await http.post("/api/publish", json={"topic": "accidents", "data": [{"id": "still-here"}]})
    assert r.status_code == 200
    msg = await good.recv_json()
    assert msg["data"] == [{"id": "still-here"}]
    with trio.fail_after(5):
        while len(daemon.connections) != 1:
            await trio.sleep(0.05)
