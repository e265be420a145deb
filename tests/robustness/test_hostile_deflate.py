"""Hostile clients against permessage-deflate (PROTOCOL.md section 9), over real sockets: RSV1 where
RFC 7692 forbids it, compressed frames from a client that did not negotiate, fragmented bombs,
corrupt deflate data, odd offers, and a compressing client that never reads (bounded memory)."""

from __future__ import annotations

import json
import zlib

import trio

from tests.conftest import running_daemon
from tests.server.test_compression import ANSWER, CHROMIUM, DeflateClient, big_entities, deflate


async def test_rsv1_from_a_client_that_did_not_negotiate_is_a_protocol_error() -> None:
    async with running_daemon() as d:
        for path, offer in (("/", None), ("/?compress=0", CHROMIUM)):
            c = await DeflateClient.open(d.ws_port, offer, path)
            assert "sec-websocket-extensions" not in c.headers
            await c.until("SNAPSHOT")
            await c.send(deflate(b'{"action":"ping"}'), rsv1=True)
            assert await c.close_code() == 1002, path
            await c.aclose()


async def test_rsv1_on_control_frames_is_a_protocol_error() -> None:
    async with running_daemon() as d:
        for opcode in (0x9, 0xA):
            c = await DeflateClient.open(d.ws_port, CHROMIUM)
            await c.until("SNAPSHOT")
            await c.send(b"hi", opcode=opcode, rsv1=True)
            assert await c.close_code() == 1002, opcode
            await c.aclose()


async def test_fragmented_bomb_is_bounded_across_frames() -> None:
    """Each fragment inflates little; together they pass max_message_bytes: 1009, not a 64 MiB buffer."""
    async with running_daemon({"server": {"max_message_bytes": 65536, "max_fragments": 128}}) as d:
        c = await DeflateClient.open(d.ws_port, CHROMIUM)
        await c.until("SNAPSHOT")
        body = deflate(b'{"action":"subscribe","topics":["' + b"a" * (8 << 20) + b'"]}')
        step = len(body) // 20 + 1
        parts = [body[i : i + step] for i in range(0, len(body), step)]
        await c.send(parts[0], rsv1=True, fin=False)
        for p in parts[1:-1]:
            await c.send(p, opcode=0x0, fin=False)
        await c.send(parts[-1], opcode=0x0)
        assert await c.close() == (1009, "message too big")
        await c.aclose()


async def test_corrupt_deflate_data_closes_1007_and_a_finished_stream_is_accepted() -> None:
    async with running_daemon() as d:
        c = await DeflateClient.open(d.ws_port, CHROMIUM)
        await c.until("SNAPSHOT")
        # A compressor that ends its stream (Z_FINISH, BFINAL set) instead of a sync flush: valid deflate.
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        finished = z.compress(b'{"action":"subscribe","topics":["accidents"]}') + z.flush(zlib.Z_FINISH)
        await c.send(finished, rsv1=True)
        _, msg = await c.until("SUBSCRIBED")
        assert msg["topics"] == ["accidents"]
        # A plain message right after a compressed one is read as plain (no inflater left over).
        await c.send(b'{"action":"subscribe","topics":["weather"]}')
        _, msg = await c.until("SUBSCRIBED")
        assert msg["topics"] == ["accidents", "weather"]
        await c.send(b"\xff\xfe\xfd garbage that is not deflate", rsv1=True)
        assert await c.close_code() == 1007
        await c.aclose()


async def test_odd_offers() -> None:
    async with running_daemon() as d:
        await d.publish(big_entities(100))
        declined = (
            "permessage-deflate; client_max_window_bits; client_max_window_bits",  # twice
            "permessage-deflate; client_max_window_bits=7",  # below 8
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=1",  # takes no value
            "permessage-deflate; server_max_window_bits",  # needs a value
            "permessage-deflate; server_max_window_bits=015x",
        )
        for offer in declined:
            c = await DeflateClient.open(d.ws_port, offer)
            assert "sec-websocket-extensions" not in c.headers, offer
            f, _ = await c.until("SNAPSHOT")
            assert not f.rsv1, offer
            await c.aclose()
        accepted = (
            'permessage-deflate; client_max_window_bits="10"',
            "permessage-deflate; client_max_window_bits=8; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate, permessage-deflate",  # two alternatives: exactly one answer
            "x-unknown, permessage-deflate",
        )
        for offer in accepted:
            c = await DeflateClient.open(d.ws_port, offer)
            assert c.headers["sec-websocket-extensions"] == ANSWER, offer
            f, snap = await c.until("SNAPSHOT")
            assert f.rsv1 and len(snap["data"]["cameras"]) == 100, offer
            await c.aclose()


async def test_compressing_client_that_never_reads_stays_bounded() -> None:
    """A deflate client that stops reading while large UPDATEs flow: the queue bound applies (in
    plain bytes), it is resynced, and once it reads again it gets a consistent compressed resync."""
    async with running_daemon({"server": {"max_queue_bytes": 262144, "slow_consumer": "resync"}}) as d:
        stuck = await DeflateClient.open(d.ws_port, CHROMIUM)
        await stuck.until("SNAPSHOT")
        peak = 0
        for i in range(300):  # ~300 x 30 KB of plain frames: far past the bound and the socket buffers
            await d.publish(big_entities(300 + i % 3))
            peak = max(peak, *(s.outbound.pending_bytes for s in d.hub.sessions.values()))
        assert peak <= 262144 + 200_000, peak  # the bound, plus one SNAPSHOT on top at most
        assert d.hub.counters.resyncs >= 1
        with trio.fail_after(20):
            while True:
                f, msg = await stuck.message(timeout=10)
                if msg["type"] == "SNAPSHOT" and msg.get("resync"):
                    assert f.rsv1
                    assert len(msg["data"]["cameras"]) == 302  # the state of now
                    assert msg["positions"]["cameras"]["seq"] == 300
                    break
        await stuck.aclose()


async def test_replayed_compressed_frames_are_the_live_compressed_bytes() -> None:
    """A compressing client recovering gets, for each replayed message, the very compressed frame a
    compressing client that stayed got live (compressed once, kept with the message in history)."""
    from urllib.parse import quote

    async with running_daemon() as d:
        stayed = await DeflateClient.open(d.ws_port, CHROMIUM, "/?topics=cameras")
        await stayed.until("SNAPSHOT")
        e = d.hub.topics.topics["cameras"].epoch
        for n in (40, 41, 42):
            await d.publish(big_entities(n))
        live = [(await stayed.until("UPDATE"))[0] for _ in range(3)]
        assert all(f.rsv1 for f in live)
        since = quote(json.dumps({"cameras": {"seq": 0, "epoch": e}}))
        back = await DeflateClient.open(d.ws_port, CHROMIUM, f"/?topics=cameras&since={since}")
        _, answer = await back.until("SNAPSHOT")
        assert answer["recovered"] == ["cameras"]
        replayed = [(await back.until("UPDATE"))[0] for _ in range(3)]
        assert [f.raw for f in replayed] == [f.raw for f in live]
        for c in (stayed, back):
            await c.aclose()
