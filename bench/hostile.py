"""Hostile clients against a real daemon, with a canary measuring what everyone else gets.

    .venv/bin/python bench/hostile.py [--attack NAME ...] [--json out.json] [-c uipd.toml]

For each attack a fresh daemon is started as a subprocess (``uipd run`` on loopback ports, the
given config plus a ``canary`` topic), then:

- a **canary** WebSocket client subscribed to ``canary`` receives what the bench publishes there
  through the API at a steady rate (50 msg/s): latency is publish time to receive time, and every
  seq the API acknowledged must arrive, in order;
- a **/healthz prober** opens a new connection every 50 ms and times the answer;
- the daemon's **RSS** is sampled from /proc every 0.25 s.

A quiet phase comes first (the reference figures), then the attack runs from a separate process (so
its CPU use does not delay the canary's own loop), then a short recovery. Attacks (issue 12, items
10-12 and 14): ``ping-flood``, ``fragment-flood``, ``snapshot-loop``, ``slowloris``. Every loop is
bounded in time and count; everything stays on 127.0.0.1.

Pass criteria (issue 12): canary p99 during the attack within 2x its quiet p99, nothing lost or out
of order, RSS growth within what the configured limits allow the attack's connections (see
``rss_bound``), /healthz within 100 ms throughout, the daemon alive and exiting cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the raw-wire helpers of the test suite

from tests.robustness.test_wire_fuzz import frame, handshake  # noqa: E402
from tests.wsclient import Closed, RawClient  # noqa: E402
from uipd.config import load  # noqa: E402
from uipd.testing import free_port  # noqa: E402

PUBLISH_RATE = 50.0
MAX_IN_FLIGHT = 64
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 2.0
RSS_INTERVAL = 0.25
HEALTHZ_BOUND = 0.1
OPCODE_TEXT, OPCODE_CONT, OPCODE_PING, OPCODE_PONG = 0x1, 0x0, 0x9, 0xA

# -- the attacks (run in a child process: ``hostile.py --attacker NAME ...``) -------------------------------

ATTACKS: dict[str, dict[str, Any]] = {
    "ping-flood": {"ws_clients": 4, "handshakes": 0, "api_conns": 0, "what": "4 clients send WebSocket pings as fast as they can; 2 read, 2 never read"},
    "fragment-flood": {"ws_clients": 2, "handshakes": 0, "api_conns": 0, "what": "2 clients: a text frame with FIN=0, then endless empty continuations, a pong every 5 s"},
    "snapshot-loop": {"ws_clients": 3, "handshakes": 0, "api_conns": 0, "what": '3 clients send {"action":"snapshot","topics":["all"]} at 90/s (under the rate limit) and read it all'},
    "slowloris": {"ws_clients": 0, "handshakes": 150, "api_conns": 150, "what": "150 WebSocket handshakes a byte every 200 ms; 100 API requests with 5 of 10 body bytes, 50 API heads a byte every 200 ms"},
}


class Tally:
    """What one attacker process did, printed as JSON when it ends."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


async def _drain(stream: trio.SocketStream, tally: Tally) -> None:
    """Read and discard whatever the server sends, until it closes."""
    try:
        while data := await stream.receive_some(1 << 20):
            tally.add("bytes_received", len(data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    tally.add("closed_by_server")


async def _ws(port: int, tally: Tally) -> RawClient | None:
    try:
        return await RawClient.connect(port)
    except Exception as exc:  # refused, reset, timed out: counted, the attack goes on
        tally.add(f"connect_failed_{type(exc).__name__}")
        return None


async def _blast(client: RawClient, first: bytes, chunk: bytes, per_chunk: int, tally: Tally, key: str, pong_every: float = 0.0) -> None:
    """Send ``first``, then ``chunk`` over and over (``per_chunk`` frames each), as fast as the socket takes it."""
    pong = frame(OPCODE_PONG, b"")
    next_pong = trio.current_time() + pong_every
    try:
        await client.send_raw(first)
        for _ in range(10_000_000 // per_chunk):  # bounded in count as well as in time
            if pong_every and trio.current_time() >= next_pong:
                await client.send_raw(pong)  # unsolicited: keeps the heartbeat happy
                next_pong += pong_every
                tally.add("pongs_sent")
            await client.send_raw(chunk)
            tally.add(key, per_chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        tally.add("send_failed")


async def attack_ping_flood(ws_port: int, api_port: int, tally: Tally) -> None:
    ping = frame(OPCODE_PING, b"x")
    async with trio.open_nursery() as nursery:
        for i in range(ATTACKS["ping-flood"]["ws_clients"]):
            client = await _ws(ws_port, tally)
            if client is None:
                continue
            if i % 2 == 0:
                nursery.start_soon(_drain, client.stream, tally)
            nursery.start_soon(_blast, client, b"", ping * 1000, 1000, tally, "pings_sent")


async def attack_fragment_flood(ws_port: int, api_port: int, tally: Tally) -> None:
    empty = frame(OPCODE_CONT, b"", fin=False)
    async with trio.open_nursery() as nursery:
        for _ in range(ATTACKS["fragment-flood"]["ws_clients"]):
            client = await _ws(ws_port, tally)
            if client is None:
                continue
            nursery.start_soon(_drain, client.stream, tally)
            nursery.start_soon(_blast, client, frame(OPCODE_TEXT, b"{", fin=False), empty * 1000, 1000, tally, "fragments_sent", 5.0)


async def attack_snapshot_loop(ws_port: int, api_port: int, tally: Tally) -> None:
    request = frame(OPCODE_TEXT, b'{"action":"snapshot","topics":["all"]}')

    async def loop(client: RawClient) -> None:
        try:
            for _ in range(100_000):
                await client.send_raw(request)
                tally.add("snapshot_requests")
                await trio.sleep(1 / 90)  # under the default rate limit (100/s)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            tally.add("send_failed")

    async with trio.open_nursery() as nursery:
        for _ in range(ATTACKS["snapshot-loop"]["ws_clients"]):
            client = await _ws(ws_port, tally)
            if client is not None:
                nursery.start_soon(_drain, client.stream, tally)
                nursery.start_soon(loop, client)


async def _trickle(port: int, data: bytes, gap: float, tally: Tally, key: str) -> None:
    """Send ``data`` a byte every ``gap`` seconds; when the server closes, start again (bounded)."""
    for _ in range(1000):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            tally.add(f"{key}_connect_failed")
            await trio.sleep(gap)
            continue
        tally.add(f"{key}_opened")
        try:
            for byte in data:
                await stream.send_all(bytes([byte]))
                await trio.sleep(gap)
            tally.add(f"{key}_completed")  # the server waited for the whole thing
            await _drain(stream, tally)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            tally.add(f"{key}_cut")
        finally:
            await trio.aclose_forcefully(stream)


async def _short_body(port: int, tally: Tally) -> None:
    """An API request promising 10 body bytes and sending 5, held open; again when closed (bounded)."""
    head = (f"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            "content-length: 10\r\n\r\n12345").encode()
    for _ in range(1000):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(head)
        except OSError:
            tally.add("short_body_connect_failed")
            await trio.sleep(0.2)
            continue
        tally.add("short_body_opened")
        start = trio.current_time()
        try:
            answer = b""
            while data := await stream.receive_some(65536):
                answer += data
            tally.add(f"short_body_answered_{answer[9:12].decode() or 'eof'}")
            tally.add("short_body_held_ms", int((trio.current_time() - start) * 1000))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            tally.add("short_body_cut")
        finally:
            await trio.aclose_forcefully(stream)


async def attack_slowloris(ws_port: int, api_port: int, tally: Tally) -> None:
    ws_head = handshake(ws_port)
    api_head = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{api_port}\r\n\r\n".encode()
    async with trio.open_nursery() as nursery:
        for _ in range(ATTACKS["slowloris"]["handshakes"]):
            nursery.start_soon(_trickle, ws_port, ws_head, 0.2, tally, "ws_handshake")
        for _ in range(100):
            nursery.start_soon(_short_body, api_port, tally)
        for _ in range(50):
            nursery.start_soon(_trickle, api_port, api_head, 0.2, tally, "api_head")


ATTACKERS = {
    "ping-flood": attack_ping_flood,
    "fragment-flood": attack_fragment_flood,
    "snapshot-loop": attack_snapshot_loop,
    "slowloris": attack_slowloris,
}


def freeze_heap() -> None:
    """Keep what exists now out of this process's full garbage collections, as the daemon does at
    startup: unfrozen, a full pass walks every module of httpx, trio and uipd (~70 ms on the
    development machine), and one falls a few seconds into every attack, a stall of the canary's
    own loop that the figures blamed on the daemon (publish_max_ms ~80, worst_at_s ~4)."""
    gc.collect()
    gc.freeze()


async def run_attacker(name: str, ws_port: int, api_port: int, seconds: float) -> None:
    freeze_heap()  # a full collection here would pause the attack, not measure the daemon
    tally = Tally()
    with trio.move_on_after(seconds):
        await ATTACKERS[name](ws_port, api_port, tally)
        await trio.sleep_forever()  # an attack whose connections all ended still lasts its time
    print(json.dumps(tally.counts), flush=True)


# -- the measurements (the main process) ----------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Measure:
    """Samples tagged with the phase they started in: ``quiet``, ``attack``, ``after``."""

    def __init__(self) -> None:
        self.phase = "quiet"
        self.attack_start = math.inf
        self.worst: dict[str, tuple[float, float]] = {}
        """Per kind of sample (``healthz``, ``publish``): the slowest one during and after the attack,
        as (seconds, when it started relative to the attack's start)."""
        self.sent: set[int] = set()
        """The seqs the API acknowledged: each must reach the canary."""
        self.latency: dict[str, list[float]] = {"quiet": [], "attack": [], "after": []}
        self.healthz: dict[str, list[float]] = {"quiet": [], "attack": [], "after": []}
        self.healthz_failures: dict[str, int] = {"quiet": 0, "attack": 0, "after": 0}
        self.rss: dict[str, list[int]] = {"quiet": [], "attack": [], "after": []}
        self.received: list[int] = []
        self.out_of_order = 0
        self.publish_errors = 0
        self.publish_skipped = 0
        """Publishes not sent because MAX_IN_FLIGHT were already waiting for an answer."""
        self.publish_seconds: dict[str, list[float]] = {"quiet": [], "attack": [], "after": []}
        """How long each API publish took to be answered (a stalled API slows the canary's feed too)."""
        self.canary_closed: str | None = None
        self.snapshot_bytes = 0

    def note(self, kind: str, phase: str, seconds: float, started: float) -> None:
        if phase != "quiet" and seconds > self.worst.get(kind, (0.0, 0.0))[0]:
            self.worst[kind] = (seconds, started - self.attack_start)


async def canary(ws_port: int, m: Measure, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    client = await RawClient.connect(ws_port)
    try:
        await client.recv_json(timeout=10)  # connection
        m.snapshot_bytes = len((await client.recv(timeout=10)).encode())  # the SNAPSHOT every new client gets
        await client.send_json({"action": "subscribe", "topics": ["canary"]})
        await client.recv_until(lambda msg: msg["type"] == "SUBSCRIBED", timeout=10)
        task_status.started()
        highest = 0
        while True:
            msg = await client.recv_json(timeout=3600)
            now = time.perf_counter()
            if msg.get("topic") != "canary" or "seq" not in msg:
                continue
            seq = msg["seq"]
            m.received.append(seq)
            if seq < highest:
                m.out_of_order += 1
            highest = max(highest, seq)
            entity = msg["data"][0]  # the publisher's clock and phase travel in the message
            m.latency[entity["phase"]].append(now - entity["t"])
    except Closed as closed:
        m.canary_closed = f"closed {closed.code} {closed.reason}".strip()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
        m.canary_closed = type(exc).__name__
    finally:
        await client.aclose()


async def publisher(api_port: int, m: Measure, stop: trio.Event) -> None:
    """Publish on schedule whether or not earlier publishes were answered (so a stall delays every
    message due during it, as it would a real feed, instead of hiding in one slow sample)."""
    in_flight = 0

    async def publish_one(http: httpx.AsyncClient, n: int) -> None:
        nonlocal in_flight
        phase, sent, started = m.phase, time.perf_counter(), trio.current_time()
        try:
            r = await http.post("/api/publish", json={"topic": "canary", "data": [{"id": "c", "n": n, "t": sent, "phase": phase}]})
            m.publish_seconds[phase].append(time.perf_counter() - sent)
            m.note("publish", phase, time.perf_counter() - sent, started)
            if r.status_code == 200:
                m.sent.add(r.json()["seq"])
            else:
                m.publish_errors += 1
        except httpx.HTTPError:
            m.publish_errors += 1
        finally:
            in_flight -= 1

    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=8)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=5.0, limits=limits) as http:
        async with trio.open_nursery() as nursery:
            tick = trio.current_time()
            for n in range(1_000_000):
                if stop.is_set():
                    return  # the nursery waits for those in flight (each bounded by the timeout)
                if in_flight < MAX_IN_FLIGHT:
                    in_flight += 1
                    nursery.start_soon(publish_one, http, n)
                else:
                    m.publish_skipped += 1
                tick += 1 / PUBLISH_RATE
                await trio.sleep_until(max(tick, trio.current_time()))


async def prober(api_port: int, m: Measure) -> None:
    request = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{api_port}\r\nconnection: close\r\n\r\n".encode()
    tick = trio.current_time()
    for _ in range(1_000_000):
        phase, start = m.phase, trio.current_time()
        ok = False
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", api_port)
                try:
                    await stream.send_all(request)
                    answer = b""
                    while data := await stream.receive_some(4096):
                        answer += data
                    ok = answer.startswith(b"HTTP/1.1 200")
                finally:
                    await trio.aclose_forcefully(stream)
            except OSError:
                pass
        m.healthz[phase].append(trio.current_time() - start)
        m.note("healthz", phase, trio.current_time() - start, start)
        if not ok:
            m.healthz_failures[phase] += 1
        tick += PROBE_INTERVAL
        await trio.sleep_until(max(tick, trio.current_time()))


async def sampler(pid: int, m: Measure) -> None:
    for _ in range(1_000_000):
        rss = rss_bytes(pid)
        if rss is not None:
            m.rss[m.phase].append(rss)
        await trio.sleep(RSS_INTERVAL)


async def wait_ready(api_port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=1.0) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode} while starting")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)


def egress_bound(config: Any, attack: str, seconds: float, snapshot_bytes: int) -> int | None:
    """Bytes the snapshot-loop's clients may receive: each its first SNAPSHOT, then what the per-client
    snapshot budget allows (``[server] snapshot_budget_bytes`` per second after a burst of
    ``snapshot_burst_bytes``; a config without those keys has no budget: only the first SNAPSHOT),
    plus 10 % for the small replies around them.  None for the other attacks (not what they test)."""
    if attack != "snapshot-loop":
        return None
    budget = getattr(config.server, "snapshot_budget_bytes", 0)
    burst = getattr(config.server, "snapshot_burst_bytes", 0) if budget else 0
    per_client = snapshot_bytes + burst + budget * seconds
    return int(1.1 * ATTACKS[attack]["ws_clients"] * per_client)


def rss_bound(config: Any, attack: str) -> int:
    """RSS growth the configured limits allow the attack: each WebSocket client its queue bound and two
    incoming messages (the one being read, the one being assembled), twice over for the buffers and
    objects around them; each pending handshake or API connection twice the 16 KiB head bound (the
    bodies sent are short); plus 32 MiB of allocator and interpreter slack."""
    spec = ATTACKS[attack]
    per_ws = config.server.max_queue_bytes + 2 * config.server.max_message_bytes
    per_head = 2 * 16 * 1024
    return 2 * spec["ws_clients"] * per_ws + (spec["handshakes"] + spec["api_conns"]) * per_head + 32 * 1024 * 1024


async def run_one(attack: str, args: argparse.Namespace) -> dict[str, Any]:
    ws_port, api_port = free_port(), free_port()
    overrides = [
        'server.host="127.0.0.1"', f"server.port={ws_port}", f"api.port={api_port}",
        'server.topics=["canary"]', 'log.level="warning"', *args.set,
    ]
    config = load(args.config, overrides)
    # python -m from ROOT: the daemon runs this checkout's code, whichever venv runs the bench
    command = [sys.executable, "-m", "uipd", "run", "-c", str(args.config)] + [a for o in overrides for a in ("--set", o)]
    log = open(Path(args.logdir) / f"hostile-{attack}.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT)
    m = Measure()
    tally: dict[str, Any] = {}
    try:
        await wait_ready(api_port, proc)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(canary, ws_port, m)
            nursery.start_soon(publisher, api_port, m, stop)
            nursery.start_soon(prober, api_port, m)
            nursery.start_soon(sampler, proc.pid, m)
            freeze_heap()  # before the quiet phase: its reference figures and the attack's alike
            await trio.sleep(args.quiet)
            m.phase, m.attack_start = "attack", trio.current_time()
            attacker = [sys.executable, str(Path(__file__).resolve()), "--attacker", attack,
                        "--ws-port", str(ws_port), "--api-port", str(api_port), "--seconds", str(args.seconds)]
            with trio.move_on_after(args.seconds + 15):
                done = await trio.run_process(attacker, capture_stdout=True, check=False)
                lines = done.stdout.decode().strip().splitlines()
                tally = json.loads(lines[-1]) if lines else {"attacker_exit": done.returncode}
            m.phase = "after"
            await trio.sleep(args.recovery)
            stop.set()
            # what was acknowledged must still arrive: wait for it, bounded
            with trio.move_on_after(5):
                while not m.sent <= set(m.received) and m.canary_closed is None:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        survived = proc.poll() is None
    finally:
        clean_exit = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                clean_exit = proc.wait(timeout=config.server.drain_timeout + 5) == 0
            except subprocess.TimeoutExpired:
                clean_exit = False
                proc.kill()
                proc.wait()
        log.close()
    lost = sorted(m.sent - set(m.received))
    egress = egress_bound(config, attack, args.seconds, m.snapshot_bytes)
    quiet_rss = max(m.rss["quiet"], default=0)
    growth = max(m.rss["attack"] + m.rss["after"], default=quiet_rss) - quiet_rss
    row = {
        "attack": attack,
        "what": ATTACKS[attack]["what"],
        "seconds": args.seconds,
        "published": len(m.sent),
        "publish_errors": m.publish_errors,
        "publish_skipped": m.publish_skipped,
        "published_attack": len(m.publish_seconds["attack"]),
        "publish_max_ms": _ms(max(m.publish_seconds["attack"], default=None)),
        "attack_egress_mib_s": round(tally.get("bytes_received", 0) / args.seconds / 2**20, 1),
        "attack_egress_mib": round(tally.get("bytes_received", 0) / 2**20, 1),
        "attack_egress_bound_mib": None if egress is None else round(egress / 2**20, 1),
        "canary_quiet_p50_ms": _ms(percentile(m.latency["quiet"], 0.5)),
        "canary_quiet_p99_ms": _ms(percentile(m.latency["quiet"], 0.99)),
        "canary_attack_p50_ms": _ms(percentile(m.latency["attack"], 0.5)),
        "canary_attack_p99_ms": _ms(percentile(m.latency["attack"], 0.99)),
        "canary_attack_received": len(m.latency["attack"]),
        "lost": len(lost),
        "out_of_order": m.out_of_order,
        "canary_closed": m.canary_closed,
        "rss_quiet_mib": round(quiet_rss / 2**20, 1),
        "rss_growth_mib": round(growth / 2**20, 1),
        "rss_bound_mib": round(rss_bound(config, attack) / 2**20, 1),
        "healthz_quiet_max_ms": _ms(max(m.healthz["quiet"], default=None)),
        "healthz_max_ms": _ms(max(m.healthz["attack"] + m.healthz["after"], default=None)),
        "healthz_failures": m.healthz_failures["attack"] + m.healthz_failures["after"],
        "healthz_over_100ms": sum(t > HEALTHZ_BOUND for t in m.healthz["attack"] + m.healthz["after"]),
        "healthz_probes": len(m.healthz["attack"] + m.healthz["after"]),
        "worst_at_s": {kind: round(at, 2) for kind, (_, at) in m.worst.items()},
        "survived": survived,
        "clean_exit": clean_exit,
        "attacker": tally,
    }
    q99, a99 = row["canary_quiet_p99_ms"], row["canary_attack_p99_ms"]
    row["checks"] = {
        "canary_p99_within_2x": q99 is not None and a99 is not None and a99 <= 2 * q99,
        "nothing_lost_or_reordered": not lost and not m.out_of_order and m.canary_closed is None,
        "rss_bounded": growth <= rss_bound(config, attack),
        "egress_bounded": egress is None or tally.get("bytes_received", 0) <= egress,
        "healthz_within_100ms": row["healthz_failures"] == 0 and (row["healthz_max_ms"] or 0) <= HEALTHZ_BOUND * 1000,
        "survived": bool(survived and clean_exit),
    }
    row["pass"] = all(row["checks"].values())
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("attack", "attack"), ("canary p50 q/a ms", lambda r: f"{r['canary_quiet_p50_ms']}/{r['canary_attack_p50_ms']}"),
        ("canary p99 q/a ms", lambda r: f"{r['canary_quiet_p99_ms']}/{r['canary_attack_p99_ms']}"),
        ("pub/got", lambda r: f"{r['published_attack']}/{r['canary_attack_received']}"), ("lost", "lost"), ("ooo", "out_of_order"),
        ("RSS +MiB (bound)", lambda r: f"{r['rss_growth_mib']} ({r['rss_bound_mib']})"),
        ("healthz max ms (>100ms/n)", lambda r: f"{r['healthz_max_ms']} ({r['healthz_over_100ms']}/{r['healthz_probes']})"),
        ("alive/clean exit", lambda r: f"{r['survived']}/{r['clean_exit']}"),
        ("to attackers MiB (bound)", lambda r: f"{r['attack_egress_mib']} ({r['attack_egress_bound_mib'] or '-'})"),
        ("pass", lambda r: "PASS" if r["pass"] else "FAIL: " + ",".join(k for k, ok in r["checks"].items() if not ok)),
    ]
    cells = [[str(c(r) if callable(c) else r[c]) for _, c in cols] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, (h, _) in enumerate(cols)]
    lines = [" | ".join(h.ljust(w) for (h, _), w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    rows = []
    for attack in args.attack or list(ATTACKS):
        print(f"== {attack}: {ATTACKS[attack]['what']} ({args.quiet:g} s quiet, {args.seconds:g} s attack)", flush=True)
        row = await run_one(attack, args)
        print(f"   {'PASS' if row['pass'] else 'FAIL'} {json.dumps({k: v for k, v in row.items() if k not in ('what', 'checks')})}", flush=True)
        rows.append(row)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["pass"] for r in rows) else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", action="append", choices=list(ATTACKS), help="run only this attack (repeatable; default: all)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("-c", "--config", default=str(ROOT / "uipd.toml"), help="the daemon's config (default: the repo's uipd.toml)")
    p.add_argument("--set", action="append", default=[], help="an extra override for the daemon, as uipd run --set")
    p.add_argument("--quiet", type=float, default=8.0, help="seconds of quiet before each attack")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds each attack lasts")
    p.add_argument("--recovery", type=float, default=2.0, help="seconds measured after each attack")
    p.add_argument("--logdir", default=os.environ.get("TMPDIR", "/tmp"), help="where the daemon's logs go")
    # the attacker child process
    p.add_argument("--attacker", choices=list(ATTACKS), help=argparse.SUPPRESS)
    p.add_argument("--ws-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.quiet, args.seconds, args.recovery) <= 0 or args.seconds > 120:
        p.error("--quiet, --seconds and --recovery must be positive, --seconds at most 120")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.attacker:
        trio.run(run_attacker, arguments.attacker, arguments.ws_port, arguments.api_port, arguments.seconds)
    else:
        sys.exit(trio.run(main, arguments))
