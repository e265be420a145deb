"""Admission under overload (issue 16 item 2): past ``[server] max_handshakes`` handshakes in
progress, a connection is answered HTTP 503 with ``Retry-After`` at once instead of waiting behind
the others until its handshake times out; every 503 of a handshake carries ``Retry-After``."""

from __future__ import annotations

import trio

from tests.conftest import connect

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def answer_to(port: int, request: bytes = UPGRADE) -> tuple[bytes, float]:
    """The whole answer to ``request`` (until the server closes) and how long it took."""
    start = trio.current_time()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return data, trio.current_time() - start


def head(answer: bytes) -> tuple[str, dict[str, str]]:
    lines = answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    return lines[0], {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}


async def test_a_handshake_past_max_handshakes_gets_503_with_retry_after_at_once(daemon_factory):
    config = {"server": {"max_handshakes": 2, "retry_after": 7, "handshake_timeout": 30.0}}
    async with daemon_factory(config) as d:
        # Two handshakes that never finish hold both places.
        stalled = [await trio.open_tcp_stream("127.0.0.1", d.ws_port) for _ in range(2)]
        for s in stalled:
            await s.send_all(b"GET / HTTP/1.1\r\nHo")
        with trio.fail_after(5):
            while d.clients.handshaking < 2:
                await trio.sleep(0.01)
        answer, took = await answer_to(d.ws_port)
        status, headers = head(answer)
        assert status == "HTTP/1.1 503 Service Unavailable", answer
        assert headers["retry-after"] == "7" and answer.endswith(b"overloaded\n")
        assert took < 2.0  # not a wait for the 30 s handshake timeout
        assert d.refusals["overloaded"] == 1 and d.clients.handshaking == 2
        # Once a place is free, a client gets in.
        await stalled[0].aclose()
        with trio.fail_after(5):
            while d.clients.handshaking > 1:
                await trio.sleep(0.01)
        client = await connect(d)
        assert d.clients.handshaking == 1
        await client.aclose()
        await stalled[1].aclose()


async def test_the_503s_of_admission_carry_retry_after_and_other_refusals_do_not(daemon_factory):
    async with daemon_factory({"server": {"max_clients": 1, "retry_after": 3}}) as d:
        first = await connect(d)
        status, headers = head((await answer_to(d.ws_port))[0])
        assert status.startswith("HTTP/1.1 503") and headers["retry-after"] == "3"
        status, headers = head((await answer_to(d.ws_port, UPGRADE.replace(b"GET / ", b"GET /nowhere ")))[0])
        assert status.startswith("HTTP/1.1 404") and "retry-after" not in headers
        await first.aclose()
