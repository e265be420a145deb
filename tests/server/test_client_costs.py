"""Every client-driven cost is bounded, over real sockets (issue 12, items 10-12).

Pings and unsolicited pongs take tokens from the rate limit (a flood is closed 1008) and their
pongs wait one at a time; fragments are gathered in one bounded buffer, bounded in frames (1009)
and counted against the rate; requested SNAPSHOTs have a byte budget (ERROR rate_limited).  A
canary client is answered throughout.
"""

from __future__ import annotations

from typing import Any

import trio
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from tests.conftest import api_client, connect
from tests.wsclient import RawClient
from uipd.core.hub import Hub
from uipd.server.connection import PARSE_BYTES

FLOOD_LIMITS = {"rate_limit": 5.0, "rate_burst": 5, "rate_limit_strikes": 3}


async def read_until(client: RawClient, done: Any, timeout: float = 5.0) -> tuple[list[bytes], list[str], int | None]:
    """Read every event (pongs included) until ``done(pongs, texts)`` or the server's close:
    (pong payloads, text messages, close code or None)."""
    pongs: list[bytes] = []
    texts: list[str] = []
    parts: list[str] = []
    with trio.fail_after(timeout):
        while not done(pongs, texts):
            events = client._pending or list(client.ws.events())
            client._pending = []
            if not events:
                data = await client.stream.receive_some(1 << 20)
                if not data:
                    return pongs, texts, None
                client.ws.receive_data(data)
                continue
            for event in events:
                if isinstance(event, Pong):
                    pongs.append(event.payload)
                elif isinstance(event, TextMessage):
                    parts.append(event.data)  # a large frame comes in parts, over several reads
                    if event.message_finished:
                        texts.append("".join(parts))
                        parts.clear()
                elif isinstance(event, CloseConnection):
                    return pongs, texts, event.code
    return pongs, texts, None


def never(pongs: list[bytes], texts: list[str]) -> bool:
    return False


async def canary_answers(daemon: Any) -> None:
    canary = await connect(daemon)
    assert (await canary.barrier()) == []
    await canary.aclose()


# -- item 10: pings and pongs ----------------------------------------------------------------------


async def test_ping_flood_is_closed_1008(daemon_factory):
    async with daemon_factory({"server": FLOOD_LIMITS}) as d:
        c = await connect(d)
        await c.send_raw(b"".join(c.ws.send(Ping(b"%d" % i)) for i in range(200)))
        pongs, _, code = await read_until(c, never)
        assert code == 1008
        assert len(pongs) <= 5  # within the burst, and only the latest of those queued together
        assert d.hub.counters.rate_limit_closes == 1
        await canary_answers(d)


async def test_a_flood_past_our_close_is_not_parsed(daemon_factory, monkeypatch):
    """Closed 1008, the flooder kept the loop parsing its pings for close_timeout (the canary and
    /healthz stalled 2 s): now a closing connection parses one slice more, then drops unparsed."""
    parsed = []
    real_ping = Hub.ping
    monkeypatch.setattr(Hub, "ping", lambda self, session, pong, now: (parsed.append(1), real_ping(self, session, pong, now)))
    async with daemon_factory({"server": FLOOD_LIMITS}) as d:
        c = await connect(d)
        flood = b"".join(c.ws.send(Ping(b"x")) for _ in range(50_000))  # 350 KB
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.send_raw, flood)
            _, _, code = await read_until(c, never)
        assert code == 1008
        assert len(parsed) <= 2 * PARSE_BYTES // 7  # the slice that closed it and one more, of 50,000
        await canary_answers(d)


async def test_unsolicited_pong_flood_is_closed_1008(daemon_factory):
    async with daemon_factory({"server": FLOOD_LIMITS}) as d:
        c = await connect(d)
        await c.send_raw(b"".join(c.ws.send(Pong(b"x")) for _ in range(200)))
        _, _, code = await read_until(c, never)
        assert code == 1008
        await canary_answers(d)


async def test_only_the_latest_pings_pong_is_sent(daemon_factory):
    async with daemon_factory({"server": {"rate_limit": 0.0}}) as d:
        c = await connect(d)
        await c.send_raw(b"".join(c.ws.send(Ping(b"%d" % i)) for i in range(1000)))
        pongs, _, code = await read_until(c, lambda pongs, texts: b"999" in pongs)
        assert code is None
        assert pongs[-1] == b"999"
        assert len(pongs) < 50  # 1000 pings, read a few at a time: each batch answered by one pong


# -- item 11: fragments ----------------------------------------------------------------------------


def fragments(client: RawClient, parts: list[str]) -> bytes:
    return b"".join(client.ws.send(TextMessage(data=p, message_finished=i == len(parts) - 1)) for i, p in enumerate(parts))


async def test_fragmented_message_is_answered(daemon):
    c = await connect(daemon)
    await c.send_raw(fragments(c, ['{"action"', "", ':"pi', 'ng"}']))
    assert (await c.recv_json())["type"] == "PONG"


async def test_message_that_never_completes_is_closed_1009(daemon_factory):
    async with daemon_factory({"server": {"rate_limit": 0.0, "max_fragments": 128}}) as d:
        c = await connect(d)
        await c.send_raw(fragments(c, ["{"] + [""] * 500 + ["}"]))  # empty continuations
        _, _, code = await read_until(c, never)
        assert code == 1009
        await canary_answers(d)


async def test_one_character_fragments_closed_at_the_fragment_bound(daemon_factory):
    """Today 16,383 one-emoji fragments (65,532 bytes, under the byte bound) held 1.7 MB."""
    async with daemon_factory({"server": {"rate_limit": 0.0}}) as d:
        c = await connect(d)
        await c.send_raw(fragments(c, ["\U0001f600"] * 16_383))
        _, _, code = await read_until(c, never, timeout=10)
        assert code == 1009
        await canary_answers(d)


async def test_fragments_take_tokens_from_the_rate_limit(daemon_factory):
    async with daemon_factory({"server": FLOOD_LIMITS}) as d:
        c = await connect(d)
        await c.send_raw(fragments(c, ["{"] + [""] * 60 + ["}"]))  # 5 within the burst, then 3 strikes
        _, texts, code = await read_until(c, never)
        assert code == 1008
        assert len(texts) == 3 and all('"rate_limited"' in t for t in texts)
        await canary_answers(d)


# -- item 12: snapshot budget ----------------------------------------------------------------------


async def test_snapshot_request_loop_is_budgeted(daemon_factory):
    config = {"server": {"snapshot_budget_bytes": 100_000, "snapshot_burst_bytes": 500_000}}
    async with daemon_factory(config) as d:
        async with api_client(d) as api:
            r = await api.post("/api/publish", json={"topic": "cameras", "type": "UPDATE", "data": [{"id": i, "blob": "x" * 1000} for i in range(200)]})
            assert r.status_code == 200
        c = await connect(d)  # its connect SNAPSHOT (~200 KB) is not charged
        for _ in range(20):
            await c.send_json({"action": "snapshot", "topics": ["all"]})
        _, texts, code = await read_until(c, lambda pongs, texts: len(texts) == 20)
        assert code is None
        kinds = ["SNAPSHOT" if t.startswith('{"type":"SNAPSHOT"') else "rate_limited" if '"rate_limited"' in t else t[:40] for t in texts]
        assert kinds.count("SNAPSHOT") in (2, 3) and kinds.count("rate_limited") == 20 - kinds.count("SNAPSHOT")
        assert sum(map(len, texts)) < 700_000  # today: 20 x ~200 KB
        # The connection stays.
        await c.send_json({"action": "ping"})
        assert (await c.recv_json())["type"] == "PONG"
