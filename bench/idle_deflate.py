"""Idle memory per connection with and without permessage-deflate negotiated (issue 15).

    .venv/bin/python bench/idle_deflate.py [--clients 2000] [--json out.json]

For each mode (``plain``: no offer; ``deflate``: exactly Chromium's offer,
``permessage-deflate; client_max_window_bits``) a fresh daemon is started (``uipd run`` on loopback
ports, topics only, no source), the clients connect, read their connection message and SNAPSHOT,
and stay idle; the daemon's RSS (``/proc/PID/status`` VmRSS) is read before and after, and the
difference per connection is reported.  The server compresses each message once and keeps no zlib
state per connection, so the deflate figure must be no larger than the plain one (within noise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.test_compression import DeflateClient  # noqa: E402  (the raw client with its own frame parser)
from uipd.testing import free_port  # noqa: E402

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_idle(port: int, offer: str | None, streams: list[trio.SocketStream], negotiated: list[bool]) -> None:
    client = await DeflateClient.open(port, offer)
    while True:  # the connection message and the SNAPSHOT: read until the link is quiet
        with trio.move_on_after(0.3):
            if not await client.stream.receive_some(65536):
                raise RuntimeError("closed after the handshake")
            continue
        break
    negotiated.append("sec-websocket-extensions" in client.headers)
    streams.append(client.stream)


async def measure(mode: str, clients: int) -> dict[str, float]:
    port, api_port = free_port(), free_port()
    config = Path(tempfile.mkdtemp()) / "idle.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nmax_clients = {clients + 100}\n'
        'topics = ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]\n'
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n[heartbeat]\ninterval = 120.0\ntimeout = 300.0\n'
    )
    command = [sys.executable, "-m", "uipd", "run", "-c", str(config)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient() as api:
            for _ in range(300):
                try:
                    if (await api.get(f"http://127.0.0.1:{api_port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)
            # A few messages so that the SNAPSHOT is over the compression threshold.
            await api.post(f"http://127.0.0.1:{api_port}/api/publish", json={"topic": "cameras", "data": [{"id": f"c{i}", "name": f"camera {i}"} for i in range(50)]})
        await trio.sleep(1.0)
        before = rss_kib(proc.pid)
        streams: list[trio.SocketStream] = []
        negotiated: list[bool] = []
        offer = CHROMIUM_OFFER if mode == "deflate" else None
        for start in range(0, clients, 200):  # 200 handshakes at a time
            async with trio.open_nursery() as nursery:
                for _ in range(min(200, clients - start)):
                    nursery.start_soon(open_idle, port, offer, streams, negotiated)
        await trio.sleep(3.0)  # let the daemon settle (its garbage collector, the allocator)
        after = rss_kib(proc.pid)
        for s in streams:
            await s.aclose()
        return {
            "clients": len(streams), "negotiated": sum(negotiated), "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": round((after - before) / max(1, len(streams)), 2),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for mode in ("plain", "deflate", "plain", "deflate"):  # alternated: the second pair checks the noise
        r = await measure(mode, args.clients)
        results.setdefault(mode, []).append(r)
        print(f"{mode:8} {r['clients']} clients ({r['negotiated']} negotiated deflate): RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, {r['kib_per_connection']} KiB per connection", flush=True)
        time.sleep(1)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    trio.run(main)
