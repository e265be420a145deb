"""uipd.client offers permessage-deflate (PROTOCOL.md section 9), over real sockets to a real
daemon: the link negotiates it (``compressedClients`` in /api/stats), the snapshot and updates
arrive compressed and intact, what the client sends (compressed by it) is read by the daemon;
``compress=False`` offers nothing, a daemon with compression off declines; wss:// works the same;
and inflating is bounded by the link's largest message (1009, not memory)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.client.test_client import FAST, next_event, publish, until, url
from tests.conftest import api_client
from uipd.client import open_client
from uipd.client.link import Closed, open_link
from uipd.runtime.daemon import Daemon

TOPICS = {"server": {"topics": ["cameras", "news"]}}


def cameras(n: int, status: str = "online") -> list[dict[str, Any]]:
    return [{"id": f"cam-{i}", "name": f"Camera {i} on Nguyen Hue", "status": status, "lat": 10.77 + i / 1e4} for i in range(n)]


async def stats(daemon: Daemon) -> dict[str, Any]:
    async with api_client(daemon) as api:
        response = await api.get("/api/stats")
        assert response.status_code == 200
        return response.json()


async def test_the_client_negotiates_deflate_and_gets_intact_state(daemon_factory: Any) -> None:
    async with daemon_factory(TOPICS) as daemon:
        await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(500)})
        async with open_client(url(daemon), topics=["cameras"], backoff=FAST) as client:
            await next_event(client, "snapshot")
            assert client.compressed
            assert (await stats(daemon))["compressedClients"] == 1
            assert dict(client.state("cameras")) == {c["id"]: c for c in cameras(500)}
            sent = daemon.flusher.compression
            assert sent.input_bytes > 40_000 and sent.output_bytes < sent.input_bytes / 3, "the snapshot came compressed"

            await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(300, "offline"), "removed": ["cam-499"]})
            await next_event(client, "update")
            assert client.state("cameras")["cam-7"]["status"] == "offline" and "cam-499" not in client.state("cameras")

            # what the client sends goes through its own compressor; the daemon inflates it
            await client.subscribe(["news"])
            assert sorted((await next_event(client, "subscribed")).message["topics"]) == ["cameras", "news"]
        await until(lambda: daemon.flusher.compression.clients == 0)


async def test_compress_false_offers_nothing_and_a_declined_offer_is_fine(daemon_factory: Any) -> None:
    async with daemon_factory(TOPICS) as daemon:
        await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(500)})
        async with open_client(url(daemon), topics=["cameras"], backoff=FAST, compress=False) as client:
            await next_event(client, "snapshot")
            assert not client.compressed
            assert (await stats(daemon))["compressedClients"] == 0
            assert len(client.state("cameras")) == 500
            assert daemon.flusher.compression.input_bytes == 0 and daemon.flusher.compression.plain_bytes > 40_000
    # a daemon with compression off declines the offer: the client reads plain frames
    async with daemon_factory({"server": {**TOPICS["server"], "compression": False}}) as daemon:
        await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(500)})
        async with open_client(url(daemon), topics=["cameras"], backoff=FAST) as client:
            await next_event(client, "snapshot")
            assert not client.compressed and len(client.state("cameras")) == 500


async def test_wss_with_compression(daemon_factory: Any, tmp_path: Any) -> None:
    from tests.server.test_access import tls_files

    server, client_ctx = tls_files(tmp_path)
    async with daemon_factory({"server": {**TOPICS["server"], **server}}) as daemon:
        await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(3000)})  # compressed off the loop
        async with open_client(f"wss://localhost:{daemon.ws_port}/", topics=["cameras"], backoff=FAST, ssl_context=client_ctx) as client:
            await next_event(client, "snapshot")
            assert client.compressed and (await stats(daemon))["compressedClients"] == 1
            assert len(client.state("cameras")) == 3000
            await publish(daemon, {"topic": "cameras", "type": "ALERT", "data": {"message": "x" * 2000}})
            assert (await next_event(client, "alert")).message["data"]["message"] == "x" * 2000


async def test_inflating_is_bounded_by_the_largest_message(daemon_factory: Any) -> None:
    """A snapshot that is small on the wire but inflates past the link's bound closes it 1009."""
    async with daemon_factory(TOPICS) as daemon:
        await publish(daemon, {"topic": "cameras", "type": "UPDATE", "data": cameras(2000)})
        with trio.fail_after(5):
            async with open_link(url(daemon, "/?topics=cameras"), max_message_size=50_000) as link:
                assert link.compressed
                assert '"connection"' in await link.get_message()
                with pytest.raises(Closed) as info:
                    await link.get_message()
                # wsproto's words for the inflater's bound (BoundedDeflate), hit before the whole message is held
                assert (info.value.code, info.value.reason) == (1009, "error in extension")
            async with open_link(url(daemon, "/?topics=cameras"), max_message_size=50_000, compress=False) as link:
                assert not link.compressed
                await link.get_message()
                with pytest.raises(Closed) as info:
                    await link.get_message()
                assert (info.value.code, info.value.reason) == (1009, "message too big")
            async with open_link(url(daemon, "/?topics=cameras"), max_message_size=1_000_000) as link:
                await link.get_message()
                assert '"SNAPSHOT"' in await link.get_message()
