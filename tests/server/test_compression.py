"""PROTOCOL.md section 9 over real sockets: permessage-deflate negotiated with the offers browsers
and Python ``websockets`` make, every message compressed once (identical bytes for every client),
small messages plain, compressed client frames read with a bounded inflater (a zip bomb closes
1009, nobody else notices), ``compression = false`` and ``?compress=0``."""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any

import trio
import websockets.sync.client

from tests.conftest import api_client, connect, running_daemon
from uipd.core import publish
from uipd.runtime.daemon import Daemon

CHROMIUM = "permessage-deflate; client_max_window_bits"
FIREFOX = "permessage-deflate"
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Frame:
    def __init__(self, raw: bytes, fin: bool, rsv1: bool, opcode: int, payload: bytes) -> None:
        self.raw, self.fin, self.rsv1, self.opcode, self.payload = raw, fin, rsv1, opcode, payload

    def text(self) -> dict[str, Any]:
        return json.loads(inflate(self.payload) if self.rsv1 else self.payload)


class DeflateClient:
    """A client with its own frame parser: sees each frame's RSV1 bit and raw bytes."""

    def __init__(self, stream: trio.SocketStream, headers: dict[str, str], rest: bytes) -> None:
        self.stream, self.headers, self._buf = stream, headers, bytearray(rest)

    @classmethod
    async def open(cls, port: int, offer: str | None, path: str = "/") -> DeflateClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        if offer is not None:
            head += f"Sec-WebSocket-Extensions: {offer}\r\n"
        await stream.send_all((head + "\r\n").encode())
        buf = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                assert data, "EOF during handshake"
                buf += data
        response, _, rest = buf.partition(b"\r\n\r\n")
        lines = response.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return cls(stream, headers, rest)

    async def _need(self, n: int) -> None:
        while len(self._buf) < n:
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise EOFError
            self._buf += data

    async def frame(self, timeout: float = 5.0) -> Frame:
        with trio.fail_after(timeout):
            await self._need(2)
            b0, b1 = self._buf[0], self._buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                await self._need(4)
                n, at = struct.unpack("!H", self._buf[2:4])[0], 4
            elif n == 127:
                await self._need(10)
                n, at = struct.unpack("!Q", self._buf[2:10])[0], 10
            await self._need(at + n)
            raw = bytes(self._buf[: at + n])
            del self._buf[: at + n]
        return Frame(raw, bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, raw[at:])

    async def message(self, timeout: float = 5.0) -> tuple[Frame, dict[str, Any]]:
        """The next text frame (pings skipped) and its JSON."""
        while True:
            f = await self.frame(timeout)
            if f.opcode == 0x1:
                return f, f.text()
            assert f.opcode in (0x9, 0xA), f.opcode  # a ping, or the pong answering ours

    async def until(self, kind: str) -> tuple[Frame, dict[str, Any]]:
        while True:
            f, msg = await self.message()
            if msg["type"] == kind:
                return f, msg

    async def send(self, payload: bytes, *, opcode: int = 0x1, rsv1: bool = False, fin: bool = True) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes(((0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode,))
        if n < 126:
            head += bytes((0x80 | n,))
        elif n < 65536:
            head += struct.pack("!BH", 0x80 | 126, n)
        else:
            head += struct.pack("!BQ", 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, mask)
        await self.stream.send_all(head + mask + masked)

    async def close_code(self) -> int:
        return (await self.close())[0]

    async def close(self) -> tuple[int, str]:
        while True:
            f = await self.frame()
            if f.opcode == 0x8:
                return struct.unpack("!H", f.payload[:2])[0], f.payload[2:].decode()

    async def aclose(self) -> None:
        await self.stream.aclose()


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def big_entities(n: int, topic: str = "cameras") -> publish.Publication:
    return publish.update(topic, [{"id": f"cam-{i}", "name": f"Camera {i} on Nguyen Hue", "status": "online", "lat": 10.77 + i / 1e4} for i in range(n)])


async def test_chromium_offer_gets_compressed_snapshot_and_plain_small_messages() -> None:
    async with running_daemon() as d:
        await d.publish(big_entities(200))
        c = await DeflateClient.open(d.ws_port, CHROMIUM)
        assert c.headers["sec-websocket-extensions"] == ANSWER
        f, msg = await c.message()
        assert msg["type"] == "connection" and not f.rsv1  # under the threshold: plain
        f, snap = await c.message()
        assert snap["type"] == "SNAPSHOT" and f.rsv1
        assert len(snap["data"]["cameras"]) == 200
        assert len(f.raw) * 4 < len(json.dumps(snap))  # it did compress
        await d.publish(publish.alert("accidents", {"message": "x"}))
        f, alert = await c.until("ALERT")
        assert not f.rsv1 and alert["data"]["message"] == "x"
        await d.publish(big_entities(50))
        f, update = await c.until("UPDATE")
        assert f.rsv1 and len(update["data"]) == 50
        async with api_client(d) as api:
            stats = (await api.get("/api/stats")).json()
            assert stats["compressedClients"] == 1
            metrics = (await api.get("/metrics")).text
        assert "uipd_compression_ratio " in metrics and 'uipd_frame_bytes_sent_total{encoding="deflate"}' in metrics
        assert d.flusher.compression.ratio < 0.5 and d.flusher.compression.built >= 2
        await c.aclose()


async def test_two_clients_get_byte_identical_compressed_frames() -> None:
    async with running_daemon() as d:
        a = await DeflateClient.open(d.ws_port, FIREFOX)  # a bare offer is accepted too
        b = await DeflateClient.open(d.ws_port, CHROMIUM)
        assert a.headers["sec-websocket-extensions"] == ANSWER
        for c in (a, b):
            await c.until("SNAPSHOT")
        built = d.flusher.compression.built
        await d.publish(big_entities(100))
        fa, _ = await a.until("UPDATE")
        fb, _ = await b.until("UPDATE")
        assert fa.rsv1 and fa.raw == fb.raw
        assert d.flusher.compression.built == built + 1  # compressed once for both
        for c in (a, b):
            await c.aclose()


async def test_large_snapshot_compressed_off_the_loop_once_for_everyone() -> None:
    async with running_daemon() as d:
        await d.publish(big_entities(3000))  # ~270 KB: past OFF_LOOP_BYTES
        clients = []
        async with trio.open_nursery() as nursery:
            async def one() -> None:
                clients.append(await DeflateClient.open(d.ws_port, CHROMIUM))
            for _ in range(5):
                nursery.start_soon(one)
        frames = [(await c.until("SNAPSHOT"))[0] for c in clients]
        assert all(f.rsv1 for f in frames)
        assert len({f.raw for f in frames}) == 1
        assert len(frames[0].text()["data"]["cameras"]) == 3000
        assert d.flusher.compression.off_loop >= 1
        plain = await connect(d)  # a client without the offer still gets the plain snapshot
        for c in clients:
            await c.aclose()
        await plain.aclose()


async def test_declined_offers_and_opt_outs() -> None:
    async with running_daemon() as d:
        await d.publish(big_entities(100))
        for offer, path in (
            ("permessage-deflate; server_max_window_bits=10", "/"),  # a window we cannot honour
            ("permessage-deflate; unknown_param", "/"),
            ("x-webkit-deflate-frame", "/"),
            (CHROMIUM, "/?compress=0"),
        ):
            c = await DeflateClient.open(d.ws_port, offer, path)
            assert "sec-websocket-extensions" not in c.headers, (offer, path)
            f, _ = await c.until("SNAPSHOT")
            assert not f.rsv1
            await c.aclose()
        # alternatives: the first one we can honour is taken
        c = await DeflateClient.open(d.ws_port, "permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=15")
        assert c.headers["sec-websocket-extensions"] == ANSWER + "; server_max_window_bits=15"
        f, _ = await c.until("SNAPSHOT")
        assert f.rsv1
        await c.aclose()
    async with running_daemon({"server": {"compression": False}}) as d:
        await d.publish(big_entities(100))
        c = await DeflateClient.open(d.ws_port, CHROMIUM)
        assert "sec-websocket-extensions" not in c.headers
        f, _ = await c.until("SNAPSHOT")
        assert not f.rsv1
        await c.aclose()


async def test_compressed_client_frames_are_read() -> None:
    async with running_daemon() as d:
        c = await DeflateClient.open(d.ws_port, CHROMIUM)
        await c.until("SNAPSHOT")
        await c.send(deflate(json.dumps({"action": "subscribe", "topics": ["accidents"]}).encode()), rsv1=True)
        _, msg = await c.until("SUBSCRIBED")
        assert msg["topics"] == ["accidents"]
        # a fragmented compressed message with a ping between its frames
        body = deflate(json.dumps({"action": "subscribe", "topics": ["weather"]}).encode())
        await c.send(body[:5], rsv1=True, fin=False)
        await c.send(b"hi", opcode=0x9)
        await c.send(body[5:], opcode=0x0)
        _, msg = await c.until("SUBSCRIBED")
        assert msg["topics"] == ["accidents", "weather"]
        # RSV1 on a continuation frame breaks RFC 7692: 1002
        await c.send(body[:5], rsv1=True, fin=False)
        await c.send(body[5:], opcode=0x0, rsv1=True)
        assert await c.close_code() == 1002
        await c.aclose()


async def test_zip_bomb_closes_1009_and_nobody_else_notices() -> None:
    async with running_daemon({"server": {"max_message_bytes": 65536}}) as d:
        canary = await DeflateClient.open(d.ws_port, CHROMIUM)
        await canary.until("SNAPSHOT")
        bomb = await DeflateClient.open(d.ws_port, CHROMIUM)
        await bomb.until("SNAPSHOT")
        payload = deflate(b'{"action":"subscribe","topics":["' + b"a" * (64 << 20) + b'"]}')  # 64 MiB inflated
        assert len(payload) < 100_000
        await bomb.send(payload, rsv1=True)
        assert await bomb.close() == (1009, "message too big")
        await d.publish(big_entities(20))
        _, update = await canary.until("UPDATE")
        assert len(update["data"]) == 20
        # just under the bound is fine
        ok = await DeflateClient.open(d.ws_port, CHROMIUM)
        await ok.until("SNAPSHOT")
        msg = json.dumps({"action": "subscribe", "topics": ["accidents"]})
        await ok.send(deflate(msg.encode() + b" " * (65536 - len(msg))), rsv1=True)
        await ok.until("SUBSCRIBED")
        for c in (canary, bomb, ok):
            await c.aclose()


async def test_python_websockets_client_with_compression() -> None:
    async with running_daemon() as d:
        await d.publish(big_entities(300))

        def session(port: int) -> tuple[str | None, list[dict[str, Any]]]:
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/", compression="deflate", open_timeout=5, max_size=None) as ws:
                got = [json.loads(ws.recv(timeout=5)), json.loads(ws.recv(timeout=5))]
                # websockets compresses what it sends: the server must inflate it
                ws.send(json.dumps({"action": "subscribe", "topics": ["cameras", "accidents"]}))
                ws.send(json.dumps({"action": "snapshot", "topics": ["cameras"], "padding": "x" * 3000}))
                while got[-1]["type"] != "SNAPSHOT" or len(got) < 3:
                    got.append(json.loads(ws.recv(timeout=5)))
                return ws.response.headers.get("Sec-WebSocket-Extensions"), got

        extensions, got = await trio.to_thread.run_sync(session, d.ws_port)
        assert extensions is not None and extensions.startswith("permessage-deflate") and "server_no_context_takeover" in extensions
        assert [m["type"] for m in got][:2] == ["connection", "SNAPSHOT"]
        assert len(got[1]["data"]["cameras"]) == 300
        assert "SUBSCRIBED" in [m["type"] for m in got] and len(got[-1]["data"]["cameras"]) == 300


async def test_tls_client_gets_the_compressed_snapshot(tmp_path: Any) -> None:
    """A TLS connection has no direct write path: its writer task compresses off the loop and writes."""
    from tests.server.test_access import tls_files

    server, client_ctx = tls_files(tmp_path)
    async with running_daemon({"server": server}) as d:
        await d.publish(big_entities(2000))  # past OFF_LOOP_BYTES

        def session(port: int) -> tuple[str | None, dict[str, Any]]:
            with websockets.sync.client.connect(f"wss://localhost:{port}/", ssl=client_ctx, open_timeout=5, max_size=None) as ws:
                json.loads(ws.recv(timeout=5))
                return ws.response.headers.get("Sec-WebSocket-Extensions"), json.loads(ws.recv(timeout=5))

        extensions, snapshot = await trio.to_thread.run_sync(session, d.ws_port)
        assert extensions is not None and extensions.startswith("permessage-deflate")
        assert len(snapshot["data"]["cameras"]) == 2000
        assert d.flusher.compression.off_loop == 1 and d.flusher.compression.ratio < 0.5
