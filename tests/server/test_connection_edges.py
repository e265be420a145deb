"""Edges of the wsproto server shell (handshake, transport, connection, flusher): close flows,
byte order on the wire, slow consumers, half-closed peers, handshake edge cases.

Every test talks to a real daemon over real sockets."""

from __future__ import annotations

import ssl
import struct

import httpx
import pytest
import trio
import trio.testing
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from tests.conftest import connect, running_daemon
from tests.runtime.support import metric, parse_metrics
from tests.server.test_access import tls_files
from tests.wsclient import RawClient
from uipd.core.publish import from_api_body
from uipd.server.clock import now

QUIET_HEARTBEAT = {"interval": 3600, "timeout": 7200}


def frame(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` may lie about the payload size."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = b"\x11\x22\x33\x44"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def only_connection(d):
    (connection,) = d.connections.values()
    return connection


def publish(d, n: int, *, topic: str = "accidents", pad: int = 0, start: int = 0) -> None:
    """``n`` UPDATEs straight into the hub, in this scheduler round."""
    for i in range(start, start + n):
        d.hub.publish(from_api_body({"topic": topic, "data": [{"id": f"e{i % 10}", "n": i, "pad": "x" * pad}]}, broadcast=False), now())


async def fill_until_blocked(d, connection, *, pad: int = 100_000, limit: int = 400) -> None:
    """Publish large UPDATEs to a client that does not read until its socket is full (the writer
    waits in a write, or a direct write left a remainder)."""
    gate = connection.transport.gate
    for i in range(limit):
        publish(d, 1, pad=pad, start=i)
        await trio.testing.wait_all_tasks_blocked()
        if (gate._lock is not None and gate._lock.locked()) or gate._pending:
            return
    raise AssertionError("the socket never filled")


async def raw_open(port: int, *, extra: bytes = b"") -> tuple[trio.SocketStream, WSConnection, list]:
    """A handshake by hand; returns the stream, the client's wsproto and events already read."""
    ws = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/")) + extra)
    events: list = []
    with trio.fail_after(5):
        while not any(isinstance(e, AcceptConnection) for e in events):
            data = await stream.receive_some(65536)
            assert data, "EOF during the handshake"
            ws.receive_data(data)
            events += list(ws.events())
    return stream, ws, [e for e in events if not isinstance(e, AcceptConnection)]


async def read_events_until_eof(stream: trio.SocketStream, ws: WSConnection, timeout: float = 5.0) -> tuple[list, float]:
    """Every event until the server ends TCP; and the time that took."""
    events = list(ws.events())
    started = trio.current_time()
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return events, trio.current_time() - started
            ws.receive_data(data)
            events += list(ws.events())


# -- confirmed bugs (these fail today) -----------------------------------------------------------


async def test_a_closing_client_that_does_not_read_is_still_dropped():
    """A client whose socket is full and that sends a binary frame (close 1003, queued frames
    first) must not outlive the heartbeat timeout: closing sessions are skipped by the heartbeat,
    and the writer's wait for a flush=True close has no deadline."""
    config = {"heartbeat": {"interval": 0.2, "timeout": 0.6}, "server": {"close_timeout": 0.5}}
    async with running_daemon(config) as d:
        c = await connect(d, auto_pong=False)
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.recv_json()
        connection = only_connection(d)
        await fill_until_blocked(d, connection)
        await c.send_bytes(b"\x00")  # close 1003 after the queued frames
        with trio.fail_after(4):  # heartbeat timeout + close_timeout, with room
            while d.connections:
                await trio.sleep(0.05)
        await c.aclose()


async def test_the_close_reply_reaches_a_peer_that_half_closed_after_its_close_frame():
    """RFC 6455 5.5.1: a close frame is answered with one.  A client may send its close frame
    and then shut down its sending side (FIN) while still reading: the EOF must not cancel the
    answer that is still queued."""
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        stream, ws, _ = await raw_open(d.ws_port)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(ws.send(CloseConnection(code=1000, reason="bye")))
        await stream.send_eof()
        events, _ = await read_events_until_eof(stream, ws)
        closes = [e for e in events if isinstance(e, CloseConnection)]
        assert closes and closes[0].code == 1000, events
        await stream.aclose()


async def test_a_binary_message_past_max_message_bytes_is_closed_before_it_ends():
    """max_message_bytes bounds every client message: a binary frame announcing 1 GiB is closed
    (1003 or 1009) once the limit is passed, not read to its end."""
    async with running_daemon({"server": {"max_message_bytes": 1000, "close_timeout": 0.5}, "heartbeat": QUIET_HEARTBEAT}) as d:
        stream, ws, _ = await raw_open(d.ws_port)
        await stream.send_all(frame(0x2, b"\x00" * 200_000, length=1 << 30))
        events = []
        with trio.move_on_after(2):
            while not any(isinstance(e, CloseConnection) for e in events):
                data = await stream.receive_some(1 << 20)
                if not data:
                    break
                ws.receive_data(data)
                events += list(ws.events())
        closes = [e.code for e in events if isinstance(e, CloseConnection)]
        assert closes and closes[0] in (1003, 1009), f"no close after 200 kB of a 1 GiB binary frame: {events[-1:]}"
        await trio.aclose_forcefully(stream)


@pytest.mark.parametrize("code", [1002, 1009])
async def test_after_our_close_the_peers_close_reply_ends_the_connection_promptly(code: int):
    """After our close frame the connection ends at the peer's close or at close_timeout: a client
    that answers our close with its own and waits for the server to end TCP (RFC 6455 7.1.1) must
    not wait close_timeout.  1002: after a violation nothing more is parsed (the server shuts its
    side of TCP instead); 1009: the path that keeps parsing."""
    config = {"server": {"close_timeout": 3.0, "max_message_bytes": 100}, "heartbeat": QUIET_HEARTBEAT}
    async with running_daemon(config) as d:
        stream, ws, _ = await raw_open(d.ws_port)
        await stream.send_all(frame(0x3, b"reserved opcode") if code == 1002 else ws.send(TextMessage("x" * 500)))
        events = []
        with trio.fail_after(5):
            while not any(isinstance(e, CloseConnection) for e in events):
                data = await stream.receive_some(1 << 20)
                assert data
                ws.receive_data(data)
                events += list(ws.events())
        close = next(e for e in events if isinstance(e, CloseConnection))
        assert close.code == code
        await stream.send_all(ws.send(close.response()))
        _, waited = await read_events_until_eof(stream, ws)
        assert waited < 1.0, f"the server kept TCP open {waited:.1f} s after both close frames"
        await stream.aclose()


def handshake_bytes(port: int, *, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET / {version}", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def _answer_to(port: int, request: bytes, *, eof: bool = False) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        try:
            await stream.send_all(request)
            if eof:
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
        return answer
    finally:
        await trio.aclose_forcefully(stream)


async def test_a_request_head_over_16_kib_gets_400():
    """MAX_REQUEST_BYTES (handshake.py): "a longer one is refused with 400".  h11 only bounds an
    *incomplete* head, and the gate reads 16 KiB at a time, so a head of 16-32 KiB that completes
    in the second read is accepted (the wire fuzz's "huge header" case, 20-300 kB, expects no 101)."""
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        for size in (20_000, 30_000, 60_000, 200_000):
            answer = await _answer_to(d.ws_port, handshake_bytes(d.ws_port, extra=f"X-Pad: {'a' * size}\r\n"))
            assert answer.startswith(b"HTTP/1.1 400"), (size, answer[:60])


def upgrade_request(port: int, *, drop: tuple[str, ...] = (), extra: tuple[str, ...] = (), first: str = "GET / HTTP/1.1") -> bytes:
    """A handshake without the headers named in ``drop`` (by prefix) and with ``extra`` lines."""
    lines = [line for line in handshake_bytes(port).decode().split("\r\n")[1:] if line and not line.startswith(drop)]
    return ("\r\n".join([first, *lines, *extra]) + "\r\n\r\n").encode()


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
OTHER_KEY = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="


@pytest.mark.parametrize(
    ("request_of", "status", "reason"),
    [
        (lambda p: upgrade_request(p, extra=(OTHER_KEY,)), 400, "duplicate_header"),
        (lambda p: upgrade_request(p, extra=(KEY,)), 400, "duplicate_header"),
        (lambda p: upgrade_request(p, extra=("Sec-WebSocket-Version: 13",)), 400, "duplicate_header"),
        (lambda p: upgrade_request(p, extra=("Origin: https://a.example", "Origin: https://b.example")), 400, "duplicate_header"),
        (lambda p: upgrade_request(p, extra=("Upgrade: websocket",)), 400, "duplicate_header"),
        (lambda p: upgrade_request(p, extra=("Authorization: Bearer a", "Authorization: Bearer b")), 400, "duplicate_header"),
    ],
    ids=["two keys", "one key twice", "two versions", "two origins", "two upgrades", "two authorizations"],
)
async def test_a_repeated_unique_header_is_refused_400(request_of, status, reason):
    """Two Sec-WebSocket-Key headers got a 101 whose accept matched neither (wsproto joins them);
    two Origins: the last one won.  RFC 6455 11.3.1/11.3.5: these appear once."""
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        answer = await _answer_to(d.ws_port, request_of(d.ws_port))
        assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:80]
        assert d.refusals == {reason: 1}
        assert not d.connections and not d.hub.sessions


async def test_every_refused_handshake_is_counted_by_reason():
    """uipd_handshakes_refused_total counted 3 of the ~22 ways a handshake is refused: none of the
    400/426 answers wsproto, h11 or the handshake itself give."""
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        p = d.ws_port
        cases = [
            (upgrade_request(p, drop=("Upgrade",)), 400, "bad_request"),
            (upgrade_request(p, drop=("Connection",)), 400, "bad_request"),
            (upgrade_request(p, drop=("Sec-WebSocket-Key",)), 400, "bad_request"),
            (upgrade_request(p, drop=("Sec-WebSocket-Version",)), 400, "bad_request"),
            (upgrade_request(p, drop=("Sec-WebSocket-Version",), extra=("Sec-WebSocket-Version: 8",)), 426, "unsupported_version"),
            (upgrade_request(p, first="POST / HTTP/1.1"), 400, "bad_request"),
            (upgrade_request(p, first="GET / HTTP/1.0"), 400, "bad_request"),
            (upgrade_request(p, extra=("Host: other.example",)), 400, "bad_request"),  # h11: two Host headers
            (upgrade_request(p, drop=("Sec-WebSocket-Key",), extra=("Sec-WebSocket-Key: short",)), 400, "bad_request"),
            (b"\x16\x03\x01 not http at all\r\n\r\n", 400, "bad_request"),
            (handshake_bytes(p, extra=f"X-Pad: {'a' * 20_000}\r\n"), 400, "request_too_large"),
            (upgrade_request(p, extra=(OTHER_KEY,)), 400, "duplicate_header"),
            (upgrade_request(p, first="GET /elsewhere HTTP/1.1"), 404, "not_found"),
        ]
        expected: dict[str, int] = {}
        for request, status, reason in cases:
            answer = await _answer_to(p, request)
            assert answer.startswith(b"HTTP/1.1 %d" % status), (reason, answer[:80])
            expected[reason] = expected.get(reason, 0) + 1
            assert d.refusals == expected, (reason, dict(d.refusals))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.api_port}") as api:
            samples = parse_metrics((await api.get("/metrics")).text)
        for reason, n in expected.items():
            assert metric(samples, "uipd_handshakes_refused_total", reason=reason) == n, reason


# -- guarantees that hold (these pass) -----------------------------------------------------------


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames: [(opcode, payload)], and any bytes left over."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n, j = struct.unpack("!H", data[j : j + 2])[0], j + 2
        elif n == 127:
            n, j = struct.unpack("!Q", data[j : j + 8])[0], j + 8
        if j + n > len(data):
            break
        frames.append((opcode, data[j : j + n]))
        i = j + n
    return frames, data[i:]


async def test_partial_writes_then_shutdown_keep_whole_frames_in_order_and_the_close_last():
    import json

    async with running_daemon({"server": {"max_queue_bytes": 256 << 20}, "heartbeat": QUIET_HEARTBEAT}) as d:
        stream, ws, _ = await raw_open(d.ws_port)
        await stream.send_all(ws.send(TextMessage('{"action":"subscribe","topics":["accidents"]}')))
        await trio.testing.wait_all_tasks_blocked()
        connection = only_connection(d)
        await fill_until_blocked(d, connection, pad=50_000)
        publish(d, 20, pad=7_000, start=10_000)  # queued behind the remainder
        d.request_shutdown()
        await trio.testing.wait_all_tasks_blocked()
        publish(d, 5, pad=10, start=20_000)  # after close_all: must not follow the close frame
        data = bytearray()
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stream.receive_some(1 << 20)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                data += chunk
                frames, rest = server_frames(bytes(data))
                if frames and frames[-1][0] == 0x8:
                    await stream.send_all(frame(0x8, struct.pack("!H", 1001)))  # the close reply
        frames, rest = server_frames(bytes(data))
        assert rest == b""
        assert frames[-1][0] == 0x8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1001
        assert all(op == 0x1 for op, _ in frames[:-1])  # no torn or interleaved frame
        seqs = [json.loads(p)["seq"] for _, p in frames[:-1] if json.loads(p)["type"] == "UPDATE"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) >= 21
        assert all(json.loads(p)["data"][0]["n"] < 20_000 for _, p in frames[:-1] if json.loads(p)["type"] == "UPDATE")
        await stream.aclose()


async def test_more_than_iov_max_frames_in_one_round_arrive_whole_and_in_order():
    async with running_daemon({"server": {"max_queue_bytes": 64 << 20}, "heartbeat": QUIET_HEARTBEAT}) as d:
        c = await connect(d)
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.recv_json()
        await trio.testing.wait_all_tasks_blocked()
        publish(d, 3000)  # one round: one take() of 3000 frames (IOV_MAX is 1024)
        got = [(await c.recv_json())["data"][0]["n"] for _ in range(3000)]
        assert got == list(range(3000))
        await c.aclose()


async def test_crossing_closes_both_close_frames_go_out():
    """Our close (shutdown's 1001) and the client's own close (not a reply) cross.  The server's
    close frame must still be written: transport.close() moves wsproto to LOCAL_CLOSING before
    the frame is on the wire; if the peer's close is read meanwhile the state is CLOSED, run()
    returns and serve_stream cancels the writer with our close frame unwritten (the client sees
    TCP end with no close frame: 1006).  Which task trio runs first is random, so the crossing
    is tried 20 times."""
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        outcomes = []
        for _ in range(20):
            stream, ws, _ = await raw_open(d.ws_port)
            await trio.testing.wait_all_tasks_blocked()
            d.hub.close_all(1001, "going away")
            await stream.send_all(ws.send(CloseConnection(code=1000, reason="me too")))  # not a reply
            events, waited = await read_events_until_eof(stream, ws)
            outcomes.append([e.code for e in events if isinstance(e, CloseConnection)])
            assert waited < 1.0
            await stream.aclose()
            with trio.fail_after(2):
                while d.connections:
                    await trio.sleep(0.01)
        # ours, or the echo of theirs when it was read before our close was made
        assert all(codes in ([1001], [1000]) for codes in outcomes), outcomes


async def test_a_stuck_client_that_is_not_closing_is_dropped_by_the_heartbeat():
    """The control for the closing case above: the same stuck client is dropped."""
    config = {"heartbeat": {"interval": 0.2, "timeout": 0.6}, "server": {"close_timeout": 0.5}}
    async with running_daemon(config) as d:
        c = await connect(d, auto_pong=False)
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.recv_json()
        await fill_until_blocked(d, only_connection(d))
        with trio.fail_after(4):
            while d.connections:
                await trio.sleep(0.05)
        await c.aclose()


async def test_a_connection_aborted_while_due_does_not_disturb_the_pass():
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        clients = [await connect(d) for _ in range(3)]
        for c in clients:
            await c.send_json({"action": "subscribe", "topics": ["accidents"]})
            await c.recv_json()
        await trio.testing.wait_all_tasks_blocked()
        victim = list(d.connections.values())[1]
        publish(d, 1)  # every client is due now
        victim.abort()  # e.g. the heartbeat drops it in the same round
        publish(d, 1, start=1)
        with trio.fail_after(5):
            while len(d.connections) != 2:
                await trio.sleep(0.01)
        survivors = [c for c in clients if c is not clients[1]]
        for c in survivors:
            assert [(await c.recv_json())["data"][0]["n"] for _ in range(2)] == [0, 1]
        assert await clients[1].expect_close(timeout=2) in (None, 1006)
        # the descriptor numbers get reused: new connections work, old ones never write to them
        fresh = await connect(d)
        await fresh.send_json({"action": "ping"})
        assert (await fresh.recv_json())["type"] == "PONG"
        for c in [*clients, fresh]:
            await c.aclose()


async def test_pipelined_frames_split_across_reads_and_a_pipelined_close():
    async with running_daemon({"heartbeat": QUIET_HEARTBEAT}) as d:
        ws = WSConnection(ConnectionType.CLIENT)
        request = ws.send(Request(host="127.0.0.1", target="/"))
        # the frames a client would send once open, built on an open client-side wsproto
        stream, ws2, _ = await raw_open(d.ws_port)
        frames = ws2.send(TextMessage('{"action":"ping"}')) + ws2.send(CloseConnection(1000, "done"))
        await stream.aclose()
        s = await trio.open_tcp_stream("127.0.0.1", d.ws_port)
        wire = request + frames  # cut at the head's end and inside the first frame
        await s.send_all(wire[: len(request) - 3])
        await trio.sleep(0.02)
        await s.send_all(wire[len(request) - 3 : len(request) + 2])
        await trio.sleep(0.02)
        await s.send_all(wire[len(request) + 2 :])
        data = b""
        with trio.fail_after(5):
            while True:
                chunk = await s.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        frames_back, rest = server_frames(body)
        assert rest == b""
        # the pipelined close drops the queued connection message and SNAPSHOT (flush=False):
        # what must hold is that the close is answered and is the last frame
        assert frames_back[-1][0] == 0x8 and struct.unpack("!H", frames_back[-1][1][:2])[0] == 1000
        await s.aclose()


async def test_a_wss_client_gets_one_writer_task_not_one_per_flush(tmp_path):
    """TLS has no synchronous write path, so every flusher pass started a writer task that ended
    when the queue ran dry: uipd_writer_tasks_started_total followed the message rate."""
    server, ctx = tls_files(tmp_path)
    async with running_daemon({"server": server, "heartbeat": QUIET_HEARTBEAT}) as d:
        c = await RawClient.connect(d.ws_port, ssl_context=ctx)
        await c.handshake_messages()
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.recv_json()
        before = d.flusher.writer_starts
        for i in range(40):  # one publish per scheduler round: 40 flusher passes
            publish(d, 1, start=i)
            assert (await c.recv_json())["data"][0]["n"] == i
        assert d.flusher.writer_starts - before <= 1, d.flusher.writer_starts - before
        await c.send_bytes(b"\x01")  # the parked writer still closes it
        assert await c.expect_close() == 1003
        with trio.fail_after(5):
            while d.connections:
                await trio.sleep(0.02)
        await c.aclose()


async def test_tls_close_flows_and_large_writes(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = {"server": {"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "key.pem"), "max_queue_bytes": 64 << 20}, "heartbeat": QUIET_HEARTBEAT}
    async with running_daemon(config) as d:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        c = await RawClient.connect(d.ws_port, ssl_context=ctx)
        await c.handshake_messages()
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        await c.recv_json()
        assert only_connection(d).transport.gate._fd is None  # no fast path on TLS
        publish(d, 30, pad=100_000)  # ~3 MB through the writer task
        assert [(await c.recv_json())["data"][0]["n"] for _ in range(30)] == list(range(30))
        await c.send_raw(c.ws.send(Ping(b"tls")))
        await c.send_bytes(b"\x01")
        assert await c.expect_close() == 1003
        with trio.fail_after(5):
            while d.connections:
                await trio.sleep(0.02)
        await c.aclose()
