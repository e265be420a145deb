"""Per-connection deadlines are spread (uipd.server.clock.spread): connections opened together are
not all cut in the same instant.  With one fixed figure, the 150 slowloris handshakes of
bench/hostile.py were all cut, and all reconnected, in one scheduler round; each such instant
stalled the canary and /healthz past the issue 12 bounds."""

from __future__ import annotations

import trio

from uipd.server.clock import SPREAD, spread

CONNECTIONS = 30


def test_spread_draws_from_the_last_quarter_of_the_timeout() -> None:
    draws = [spread(2.0) for _ in range(2000)]
    assert 2.0 * (1 - SPREAD) <= min(draws) and max(draws) <= 2.0
    assert max(draws) - min(draws) > 0.4  # not one figure


async def _cut_times(port: int, send: bytes) -> list[float]:
    """Open CONNECTIONS at once, each sending ``send`` and nothing more: when each one ended
    (the server's EOF or answer then EOF), from the moment they were all open."""
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(CONNECTIONS)]
    start = trio.current_time()
    ended: list[float] = []

    async def wait_end(stream: trio.SocketStream) -> None:
        await stream.send_all(send)
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        ended.append(trio.current_time() - start)
        await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(wait_end, stream)
    return ended


async def test_silent_handshakes_opened_together_are_cut_over_a_quarter_of_handshake_timeout(daemon_factory):
    async with daemon_factory({"server": {"handshake_timeout": 1.0}}) as d:
        ended = await _cut_times(d.ws_port, b"GET / HTTP/1.1\r\nHo")
    assert min(ended) > 0.7 and max(ended) < 1.5, ended
    assert max(ended) - min(ended) > 0.1, ended  # one fixed deadline: all within a few ms


async def test_short_api_bodies_sent_together_get_their_408_over_a_quarter_of_request_timeout(daemon_factory):
    async with daemon_factory({"api": {"request_timeout": 1.0}}) as d:
        head = (f"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1:{d.api_port}\r\ncontent-type: application/json\r\n"
                "content-length: 10\r\n\r\n12345").encode()
        ended = await _cut_times(d.api_port, head)
    assert min(ended) > 0.7 and max(ended) < 1.5, ended
    assert max(ended) - min(ended) > 0.1, ended
