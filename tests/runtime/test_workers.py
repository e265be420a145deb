"""``[server] workers = 2`` on the real Redis: the real ``uipd run`` (a supervisor and two worker
processes), real sockets.  One seq order through both workers, a killed worker restarted,
SIGHUP reloading every worker, SIGTERM draining all, ``/api/stats`` and ``/metrics`` for the
whole group, sd_notify for the group, and the memory broker refused."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio

from tests.cli.support import one_line, run_cli
from tests.cluster.test_cluster import REDIS, redis_up
from tests.runtime.support import ROOT, UIPD, NotifySocket, free_port, write_config
from tests.wsclient import Closed, RawClient
from uipd.runtime.group import merge_metrics
from uipd.runtime.workers import reuseport_sockets

pytestmark = pytest.mark.skipif(not redis_up() and not os.environ.get("CI"), reason="no Redis on 127.0.0.1:6379")


class Group:
    """``uipd run --workers 2`` as a subprocess, its log in a file."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str] | None = None, **server: object) -> None:
        # Port 0: the supervisor picks each port once and logs it (a port picked here could be
        # taken by another process before the supervisor binds it).
        self.config = write_config(tmp_path / "uipd.toml", {
            "server": {"host": "127.0.0.1", "port": 0, "topics": ["accidents", "weather"], "drain_timeout": 4.0, **server},
            "api": {"port": 0},
            "broker": {"kind": "redis", "url": REDIS, "prefix": f"t-{uuid.uuid4().hex[:8]}", "lease_ttl": 1.5},
        })
        self.log = tmp_path / "uipd.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen([UIPD, "run", "-c", str(self.config), "--workers", "2"], cwd=ROOT, stderr=self._log, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while not (m := re.search(r"WebSocket 127\.0\.0\.1:(\d+), HTTP API 127\.0\.0\.1:(\d+)", self.logged())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.logged()
            time.sleep(0.05)
        self.ws, self.api = int(m.group(1)), int(m.group(2))

    def logged(self) -> str:
        return self.log.read_text()

    async def stats(self) -> dict:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"http://127.0.0.1:{self.api}/api/stats")).json()

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"http://127.0.0.1:{self.api}/metrics")).text

    async def until_stats(self, predicate, timeout: float = 40.0) -> dict:
        """The first /api/stats answer ``predicate`` accepts (the workers announce every 2 s)."""
        with trio.fail_after(timeout):
            while True:
                try:
                    stats = await self.stats()
                    if predicate(stats):
                        return stats
                except (httpx.HTTPError, ValueError):
                    pass
                await trio.sleep(0.2)

    async def ready(self) -> dict:
        return await self.until_stats(lambda s: len(s.get("workers", {})) == 2 and s["cluster"]["connected"])

    async def wait(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            while self.proc.poll() is None:
                await trio.sleep(0.02)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def connect(port: int) -> RawClient:
    # no pong: a heartbeat ping read together with the drain's close frame would make the test
    # client answer a connection already closing (the test runs well within heartbeat.timeout)
    client = await RawClient.connect(port, auto_pong=False)
    assert (await client.recv_json())["type"] == "connection"
    assert (await client.recv_json())["type"] == "SNAPSHOT"
    return client


async def clients_on_both(group: Group, at_least: int = 6) -> tuple[list[RawClient], dict]:
    """Clients until both workers have some (the kernel hashes each connection to one)."""
    clients: list[RawClient] = []
    for _ in range(40):
        clients.append(await connect(group.ws))
        if len(clients) < at_least:
            continue
        stats = await group.until_stats(lambda s: s["clients"] == len(clients), timeout=10)
        if all(w["clients"] > 0 for w in stats["workers"].values()):
            return clients, stats
    raise AssertionError(f"40 connections all went to one worker: {stats['workers']}")


async def publish(group: Group, n: int) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"http://127.0.0.1:{group.api}/api/publish", json={"topic": "accidents", "data": [{"id": f"a{n % 3}", "n": n}]})
        assert r.status_code == 200, r.text


def counter(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in the metrics"
    return float(m.group(1))


async def test_a_publish_through_the_api_reaches_the_clients_of_both_workers_in_seq_order_and_stats_count_every_client(tmp_path):
    group = Group(tmp_path)
    try:
        await group.ready()
        clients, stats = await clients_on_both(group)
        assert stats["clients"] == len(clients) == sum(w["clients"] for w in stats["workers"].values())
        assert stats["topics"]["accidents"]["subscribers"] == len(clients)  # default_topics: all
        for n in range(10):
            await publish(group, n)
        for c in clients:
            got = [await c.recv_json() for _ in range(10)]
            assert [m["type"] for m in got] == ["UPDATE"] * 10
            assert [m["data"][0]["n"] for m in got] == list(range(10))
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + 10))
        # /metrics answers for the group too: every client, every delivery, one seq (not a sum)
        with trio.fail_after(10):
            while True:
                text = await group.metrics()
                if counter(text, "uipd_deliveries_total") == 10 * len(clients):
                    break
                await trio.sleep(0.3)
        assert counter(text, "uipd_clients") == len(clients)
        assert counter(text, "uipd_topic_seq_total", '{topic="accidents"}') == seqs[-1]
        # uipd stats reads the same totals
        r = await trio.run_process([UIPD, "stats", "--json", "--api", f"http://127.0.0.1:{group.api}"], capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stderr
        assert f'"clients": {len(clients)}' in r.stdout.decode() or f'"clients":{len(clients)}' in r.stdout.decode()
        for c in clients:
            await c.aclose()
    finally:
        group.close()


async def test_a_killed_worker_is_restarted_and_its_clients_can_reconnect(tmp_path):
    group = Group(tmp_path)
    try:
        await group.ready()
        clients, stats = await clients_on_both(group)
        victim = next(n for n, w in stats["workers"].items() if w["worker"] == 0)
        old_pid = stats["workers"][victim]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        dropped = []
        for c in clients:
            try:
                await c.recv(timeout=0.5)
            except Closed:
                dropped.append(c)
            except (trio.TooSlowError, trio.BrokenResourceError, ConnectionResetError):
                pass
        assert len(dropped) == stats["workers"][victim]["clients"]
        # the supervisor starts a new worker 0 (new pid, same node id) and the group counts again
        stats = await group.until_stats(lambda s: s.get("workers", {}).get(victim, {}).get("pid") not in (None, old_pid))
        assert re.search(r"worker 0 \(pid \d+\) exited with signal SIGKILL .*restarting", group.logged())
        again = [await connect(group.ws) for _ in dropped]  # the dropped clients come back
        survivors = [c for c in clients if c not in dropped]
        stats = await group.until_stats(lambda s: s["clients"] == len(again) + len(survivors), timeout=10)
        await publish(group, 1)
        for c in [*again, *survivors]:
            assert (await c.recv_until(lambda m: m["type"] == "UPDATE", timeout=10))["data"][0]["n"] == 1
        assert group.proc.poll() is None
    finally:
        group.close()


async def test_sighup_reloads_every_worker_and_sigterm_drains_all_and_exits_0_with_sd_notify_for_the_group(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    group = Group(tmp_path, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
    try:
        await trio.to_thread.run_sync(notify.wait_for, "READY=1", 40.0)
        # the group's watchdog: every 0.5 s while both workers send theirs (none is killed for it)
        await trio.to_thread.run_sync(notify.wait_for, "WATCHDOG=1", 3.0)
        await trio.to_thread.run_sync(notify.wait_for, "WATCHDOG=1", 3.0)
        await group.ready()
        clients, _ = await clients_on_both(group, at_least=4)
        # SIGHUP: a new welcome, reloaded by both workers
        group.config.write_text(group.config.read_text().replace("[server]\n", '[server]\nwelcome = "reloaded"\n'))
        group.proc.send_signal(signal.SIGHUP)
        await trio.to_thread.run_sync(notify.wait_for, "RELOADING=1", 10.0)
        await trio.to_thread.run_sync(notify.wait_for, "READY=1", 20.0)
        with trio.fail_after(10):
            while counter(await group.metrics(), "uipd_config_reloads_total", '{result="ok"}') != 2:
                await trio.sleep(0.3)
        welcomes = set()
        for _ in range(8):
            c = await RawClient.connect(group.ws)
            welcomes.add((await c.recv_json())["message"])
            await c.aclose()
        assert welcomes == {"reloaded"}
        # SIGTERM: every client of both workers gets 1001, the group exits 0 within drain_timeout
        start = time.monotonic()
        group.proc.send_signal(signal.SIGTERM)
        codes = [await c.expect_close(timeout=5) for c in clients]
        assert codes == [1001] * len(clients)
        assert await group.wait(timeout=6) == 0
        assert time.monotonic() - start < 4.0 + 1.0
        await trio.to_thread.run_sync(notify.wait_for, "STOPPING=1", 1.0)
        log = group.logged()
        assert "missed its watchdog" not in log and "restart" not in log
        assert log.count("exited with code 0") == 2 and "uipd stopped (2 workers)" in log
    finally:
        group.close()
        notify.close()


def test_workers_with_the_memory_broker_is_a_config_error_naming_the_key(tmp_path):
    config = write_config(tmp_path / "uipd.toml", {"server": {"port": free_port()}, "api": {"port": free_port()}})
    r = run_cli("run", "-c", str(config), "--workers", "2")
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("uipd: config error: ") and "server.workers" in line and "redis" in line


def test_reuseport_sockets_share_one_port_chosen_once():
    socks = reuseport_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1 and ports != {0}
    finally:
        for s in socks:
            s.close()


def test_merged_metrics_add_up_counts_and_keep_the_largest_seq():
    a = '# HELP uipd_deliveries_total d\n# TYPE uipd_deliveries_total counter\nuipd_deliveries_total 3.0\n' \
        '# HELP uipd_topic_seq_total s\n# TYPE uipd_topic_seq_total counter\nuipd_topic_seq_total{topic="x"} 7.0\n'
    b = a.replace(" 3.0", " 4.0").replace(" 7.0", " 6.0")
    merged = merge_metrics([a, b]).decode()
    assert "uipd_deliveries_total 7.0" in merged
    assert 'uipd_topic_seq_total{topic="x"} 7.0' in merged
