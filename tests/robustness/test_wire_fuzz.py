"""Raw-socket fuzz of the opening handshake and the frame layer, while a steady client listens.

Each case runs on its own TCP connection (``trio.open_tcp_stream``): truncated and garbage HTTP
requests, huge headers, a missing Sec-WebSocket-Key, a wrong version, a request that never ends;
then, after a valid handshake, frames RFC 6455 forbids (reserved opcodes, unmasked client frames,
invalid UTF-8, 64-bit lengths, fragmented or oversized control frames, continuations with nothing
to continue, interleaved data frames, RSV bits), truncated frames and random bytes.  Cases are
generated from a seeded RNG.  Meanwhile a steady client must receive every published UPDATE, in
order; afterwards the daemon holds only the steady client and still serves new ones.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Pong, Request, TextMessage

from tests.conftest import api_client, connect, running_daemon

SEED = 20251129
N_CASES = int(os.environ.get("UIPD_WIRE_CASES", "360"))
HANDSHAKE_TIMEOUT = 1.0
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, length: int | None = None) -> bytes:
    """A client frame, as wrong as asked: ``length`` lies about the payload size."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake(port: int, *, path: str = "/", key: str | None = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13", method: str = "GET", extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


# -- the cases ----------------------------------------------------------------------------------


def make_cases(port: int, rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Each case: bytes to send before/after a handshake and what the server may answer."""
    ping = b'{"action":"ping"}'
    good = handshake(port)
    makers = [
        # -- the handshake: never a 101
        lambda: {"kind": "truncated request", "pre": good[: rng.randrange(1, len(good) - 2)], "eof": True},
        lambda: {"kind": "garbage request", "pre": rng.randbytes(rng.randrange(1, 3000)), "eof": True},
        lambda: {"kind": "garbage request line", "pre": b"\x16\x03\x01" + rng.randbytes(40) + b"\r\n\r\n", "eof": True},
        lambda: {"kind": "huge header", "pre": handshake(port, extra=f"X-Pad: {'a' * rng.randrange(20_000, 300_000)}\r\n"), "eof": False},
        lambda: {"kind": "many headers", "pre": handshake(port, extra="".join(f"X-H{i}: v\r\n" for i in range(rng.randrange(500, 3000)))), "eof": False, "lenient": True},
        lambda: {"kind": "no Sec-WebSocket-Key", "pre": handshake(port, key=None), "eof": False},
        lambda: {"kind": "bad Sec-WebSocket-Key", "pre": handshake(port, key=rng.choice(["", "x", "not base64 at all!!"])), "eof": False},
        lambda: {"kind": "wrong version", "pre": handshake(port, version=rng.choice(["8", "12", "14", "", "abc"])), "eof": False},
        lambda: {"kind": "wrong method", "pre": handshake(port, method=rng.choice(["POST", "PUT", "BREW"])), "eof": False},
        lambda: {"kind": "plain HTTP", "pre": f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(), "eof": False},
        lambda: {"kind": "HTTP/1.0", "pre": good.replace(b"HTTP/1.1", b"HTTP/1.0"), "eof": False},
        # -- after a valid handshake: RFC 6455 violations are closed 1002/1007/1009, with a close frame
        lambda: {"kind": "reserved opcode", "post": frame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]), rng.randbytes(rng.randrange(0, 50))), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "unmasked client frame", "post": frame(1, ping, masked=False), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "invalid UTF-8", "post": frame(1, rng.choice([b"\xff\xfe", b"\xc3\x28", b'{"a":"\xed\xa0\x80"}', b"\xf8\x88\x80\x80\x80"])), "codes": {INVALID_DATA}},
        lambda: {"kind": "64-bit length, top bit set", "post": b"\x81\xff" + struct.pack("!Q", (1 << 63) + rng.randrange(1 << 32)) + b"\0\0\0\0", "codes": {PROTOCOL_ERROR, TOO_BIG}},
        lambda: {"kind": "64-bit length over the limit", "post": frame(1, b"x" * rng.randrange(66_000, 90_000), length=rng.choice([1 << 20, 1 << 32, 1 << 40])), "codes": {TOO_BIG}},
        lambda: {"kind": "fragmented control frame", "post": frame(rng.choice([8, 9, 10]), b"abc", fin=False), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "control frame over 125 bytes", "post": frame(rng.choice([9, 10]), b"p" * rng.randrange(126, 400)), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "continuation without start", "post": frame(0, ping, fin=rng.random() < 0.5), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "interleaved data frames", "post": frame(1, ping[:5], fin=False) + frame(rng.choice([1, 2]), ping[5:]), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "RSV bits", "post": frame(1, ping, rsv=rng.randrange(1, 8)), "codes": {PROTOCOL_ERROR}},
        lambda: {"kind": "truncated frame", "post": (lambda f: f[: rng.randrange(1, len(f))])(frame(1, ping)), "eof": True},
        lambda: {"kind": "random bytes", "post": rng.randbytes(rng.randrange(1, 4000)), "eof": True},
        # -- positive controls: legal if unusual frames are understood
        lambda: {"kind": "fragmented message (valid)", "post": frame(1, ping[:7], fin=False) + frame(9, b"mid") + frame(0, ping[7:12], fin=False) + frame(0, ping[12:]), "reply": "PONG"},
        lambda: (lambda p: {"kind": "ping with payload (valid)", "post": frame(9, p), "payload": p, "reply": "pong"})(b"probe-%d" % rng.randrange(1000)),
    ]
    cases = [makers[i % len(makers)]() for i in range(n)]
    cases += [{"kind": "slowloris", "pre": good[:30], "eof": False, "slow": True} for _ in range(3)]
    rng.shuffle(cases)
    return cases


async def run_case(port: int, case: dict[str, Any], outcomes: Counter[str]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        with trio.fail_after(15):
            if "pre" in case:
                await run_handshake_case(stream, case, outcomes)
            else:
                await run_frame_case(stream, port, case, outcomes)
    finally:
        await trio.aclose_forcefully(stream)


async def read_some(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def read_to_eof(stream: trio.SocketStream, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit:
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        data += chunk
    return data


async def run_handshake_case(stream: trio.SocketStream, case: dict[str, Any], outcomes: Counter[str]) -> None:
    try:
        await stream.send_all(case["pre"])
        if case["eof"]:
            await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server gave up on us mid-send: also a refusal
    started = trio.current_time()
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await read_some(stream)
        if not chunk:
            break
        answer += chunk
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.") else "closed"
    if status == "101":
        assert case.get("lenient"), f"{case['kind']}: the handshake was accepted"
        # Accepted: a working connection (its connection message comes), which ends at our EOF.
        while b'"type":"connection"' not in answer:
            chunk = await read_some(stream)
            assert chunk, "accepted, then closed without a connection message"
            answer += chunk
        await stream.send_eof()
    await read_to_eof(stream)  # the server must end the connection itself (no hang)
    if case.get("slow"):
        assert trio.current_time() - started < HANDSHAKE_TIMEOUT + 5, "slowloris outlived the handshake timeout"
    outcomes[f"{case['kind']}: {status}"] += 1


async def run_frame_case(stream: trio.SocketStream, port: int, case: dict[str, Any], outcomes: Counter[str]) -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/")))
    events: list[Any] = []
    while not any(isinstance(e, AcceptConnection) for e in events):
        data = await stream.receive_some(65536)
        assert data, "EOF during a valid handshake"
        ws.receive_data(data)
        events += list(ws.events())
    try:
        await stream.send_all(case["post"])
        if case.get("eof"):
            await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    texts: list[str] = []
    result = None
    while result is None:
        for event in events:
            if isinstance(event, TextMessage):
                texts.append(event.data)
                if case.get("reply") == "PONG" and '"PONG"' in event.data:
                    result = "PONG"
            elif isinstance(event, Pong) and case.get("reply") == "pong":
                assert event.payload == case["payload"], "the pong must echo the ping's payload"
                result = "pong"
            elif isinstance(event, CloseConnection):
                result = f"close {event.code}"
                break
        if result is not None:
            break
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            result = "closed without close frame"
            break
        ws.receive_data(data)
        events = list(ws.events())
    outcomes[f"{case['kind']}: {result}"] += 1
    if "reply" in case:
        assert result == case["reply"], f"{case['kind']}: {result}"
    elif "codes" in case:
        # RFC 6455 7.4.1: the server fails the connection with a close frame carrying the code
        # for the violation.
        assert result.startswith("close ") and int(result.split()[1]) in case["codes"], f"{case['kind']}: {result}"
    else:
        assert result.startswith("close") or result == "closed without close frame"


async def test_wire_fuzz_never_reaches_other_clients() -> None:
    rng = random.Random(SEED)
    config = {"server": {"handshake_timeout": HANDSHAKE_TIMEOUT, "close_timeout": 1.0}}
    async with running_daemon(config) as d:
        steady = await connect(d)
        await steady.send_json({"action": "subscribe", "topics": ["accidents"]})
        assert (await steady.recv_json())["type"] == "SUBSCRIBED"
        cases = make_cases(d.ws_port, rng, N_CASES)
        outcomes: Counter[str] = Counter()
        received: list[int] = []
        published = 0
        done = trio.Event()
        stopped = trio.Event()

        async def publisher() -> None:
            nonlocal published
            async with api_client(d) as http:
                while not done.is_set():
                    r = await http.post("/api/publish", json={"topic": "accidents", "data": [{"id": "steady", "n": published + 1}]})
                    assert r.status_code == 200, r.text
                    published += 1
                    await trio.sleep(0.005)
            stopped.set()

        async def listener() -> None:
            while True:
                msg = await steady.recv_json(timeout=30)
                assert msg["type"] == "UPDATE", msg
                received.append(msg["data"][0]["n"])
                assert msg["seq"] == msg["data"][0]["n"]

        limiter = trio.CapacityLimiter(24)

        async def one(case: dict[str, Any]) -> None:
            async with limiter:
                await run_case(d.ws_port, case, outcomes)

        started = trio.current_time()
        async with trio.open_nursery() as outer:
            outer.start_soon(listener)
            outer.start_soon(publisher)
            async with trio.open_nursery() as fuzz:
                for case in cases:
                    fuzz.start_soon(one, case)
            done.set()
            with trio.fail_after(20):
                await stopped.wait()  # its last publish counted: no message the count does not know
                while len(received) < published:
                    await trio.sleep(0.02)
            outer.cancel_scope.cancel()
        elapsed = trio.current_time() - started

        assert received == list(range(1, published + 1)), "the steady client lost or reordered updates"
        with trio.fail_after(15):
            while len(d.connections) != 1 or len(d.hub.sessions) != 1:
                await trio.sleep(0.05)
        assert len(d.hub.index.all_topics) == 0
        assert {t: len(s) for t, s in d.hub.index.by_topic.items() if s} == {"accidents": 1}
        fresh = await connect(d)
        await fresh.send_json({"action": "ping"})
        assert (await fresh.recv_json())["type"] == "PONG"
        await fresh.aclose()

    print(f"\nwire fuzz: {len(cases)} bad connections in {elapsed:.1f} s; steady client got {published}/{published} updates in order")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:4d}  {outcome}")
    assert sum(outcomes.values()) == len(cases)


@pytest.mark.parametrize(
    "variant",
    [
        "empty key",
        "short key",
        "HTTP/1.0",
    ],
)
async def test_malformed_handshakes_are_refused(variant: str) -> None:
    async with running_daemon() as d:
        if variant == "HTTP/1.0":
            request = handshake(d.ws_port).replace(b"HTTP/1.1", b"HTTP/1.0")
        else:
            request = handshake(d.ws_port, key="" if variant == "empty key" else "eA==")
        stream = await trio.open_tcp_stream("127.0.0.1", d.ws_port)
        try:
            await stream.send_all(request)
            answer = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in answer:
                    chunk = await read_some(stream)
                    if not chunk:
                        break
                    answer += chunk
        finally:
            await trio.aclose_forcefully(stream)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:40]
