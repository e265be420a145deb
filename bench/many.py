"""100,000 connections on one host through workers (issue 16).

    .venv/bin/python bench/many.py [--clients 100000] [--workers 6] [--holders 6] [--idle 20] [--json FILE]

Starts ``uipd run --workers W`` on the Redis broker (127.0.0.1:6379), then H holder processes
(bench/holder.js, the kit's minimal client), each from its own source address (127.0.0.10+j:
one address reaches one port from ~28k ephemeral ports) and each under 20,000 descriptors, as
is every worker (hard ``ulimit -n`` 20,000 here).  Reports: time to open all, RSS per connection
(all workers' RSS after connecting minus before, over the clients), CPU per second while idle
(heartbeats: ``[heartbeat] interval`` 10 s), the time for one broadcast ALERT to reach every
client (publish request sent to the last client's receipt), and the SIGTERM drain (exit code,
seconds, and how many clients got a close frame with which code, as bench/drain.py counts them).  A holder
retries a handshake refused with 503 (admission under overload) after the daemon's Retry-After,
as a browser client does; ``retried_503`` counts those, ``failure_reasons`` the final failures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgroup import RESULTS, Daemon, cpu_seconds, http_json, kit, rss_kib  # noqa: E402

FD_LIMIT = 20000


class Holder:
    def __init__(self, work: Path, port: int, clients: int, ip: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(Path(__file__).with_name("holder.js")), str(work / "loadgen" / "rawws.js"), f"ws://127.0.0.1:{port}/", str(clients), ip],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.lines: list[dict] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(json.loads(line))
                self.cond.notify_all()

    def wait_for(self, pred, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"holder: nothing matching within {timeout} s: {self.lines}")
                self.cond.wait(left)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def close_frames(holders: list[Holder], sent_wall: float) -> dict:
    """After SIGTERM: how many clients got a close frame, with which code, and when the last came."""
    if not holders:
        return {}
    for h in holders:
        try:
            h.wait_for(lambda l: "allClosed" in l, timeout=5)
        except TimeoutError:
            pass
        assert h.proc.stdin is not None
        h.proc.stdin.close()
    summaries = [h.wait_for(lambda l: "closes" in l and "allClosed" not in l, timeout=20) for h in holders]
    codes: dict[str, int] = {}
    for s in summaries:
        for code, n in s["closes"].items():
            codes[code] = codes.get(code, 0) + n
    out = {"close_codes": codes, "got_1001": codes.get("1001", 0), "close_frames": sum(s["closeFrames"] for s in summaries),
           "still_open": sum(s["open"] for s in summaries)}
    for key, name, pick in (("firstCloseAt", "first_close_frame_ms", min), ("lastCloseAt", "last_close_frame_ms", max), ("lastEndAt", "last_tcp_end_ms", max)):
        times = [s[key] for s in summaries if s[key] is not None]
        if times:
            out[name] = round(pick(times) - sent_wall, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--holders", type=int, default=6)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds idle for the heartbeat CPU figure")
    ap.add_argument("--broker", choices=("redis", "memory"), default="redis", help="memory: one process only (--workers 1)")
    ap.add_argument("--json", default="")
    ap.add_argument("--log-level", default="warning", help="the daemon's log level (its log: bench/results/many-N.log)")
    args = ap.parse_args()
    per_holder = -(-args.clients // args.holders)
    per_worker = -(-args.clients // args.workers)
    if args.broker == "memory" and args.workers != 1:
        sys.exit("--broker memory takes --workers 1 (workers share state through Redis)")
    if per_holder > FD_LIMIT - 500 or per_worker > FD_LIMIT - 1000:
        sys.exit(f"{per_holder} clients per holder / ~{per_worker} per worker: over the {FD_LIMIT} descriptors a process may hold here; raise --holders/--workers")
    work = kit()
    log = RESULTS / f"many-{args.clients}.log"
    # Redis timeouts for a storm on a shared 2-core box: the default command_timeout (0.5 s) is
    # shorter than a worker's loop stalls while 6 workers and 6 generators share 2 cores, and a
    # session that times out resyncs every client (a SNAPSHOT each), which feeds the overload.
    broker = {"broker.command_timeout": 1.6, "broker.ping_interval": 2.0, "broker.publish_timeout": 5.0} if args.broker == "redis" else {}
    daemon = Daemon(args.workers, args.broker, log=log, extra={**broker, "log.level": args.log_level}, max_clients=FD_LIMIT - 500)
    out: dict = {"clients": args.clients, "workers": args.workers, "holders": args.holders, "broker": args.broker}
    holders: list[Holder] = []
    try:
        pids = daemon.worker_pids
        time.sleep(1.0)
        rss0, cpu0 = rss_kib(pids), cpu_seconds(daemon.pids)
        t0 = time.monotonic()
        counts = [min(per_holder, args.clients - j * per_holder) for j in range(args.holders)]
        holders = [Holder(work, daemon.port, n, f"127.0.0.{10 + j}") for j, n in enumerate(counts) if n > 0]
        ready = [h.wait_for(lambda l: "ready" in l, timeout=900) for h in holders]
        out["open_all_s"] = round(time.monotonic() - t0, 2)
        out["connected"] = sum(r["ready"] for r in ready)
        out["failed"] = sum(r["failed"] for r in ready)
        out["retried_503"] = sum(r.get("retried", 0) for r in ready)
        reasons: dict[str, int] = {}
        for r in ready:
            for why, n in r.get("reasons", {}).items():
                reasons[why] = reasons.get(why, 0) + n
        out["failure_reasons"] = reasons
        out["server_cpu_connect_s"] = round(cpu_seconds(daemon.pids) - cpu0, 2)
        time.sleep(2.5)  # the node announcements (every 2 s) catch up
        stats = daemon.stats()
        out["per_worker_clients"] = [w["clients"] for w in stats.get("workers", {}).values()]
        out["stats_clients"] = stats["clients"]
        rss1 = rss_kib(pids)
        out["rss_total_mib"] = round(rss1 / 1024, 1)
        out["rss_per_conn_kib"] = round((rss1 - rss0) / max(1, out["connected"]), 2)
        c1 = cpu_seconds(daemon.pids)
        time.sleep(args.idle)
        out["idle_cpu_s_per_s"] = round((cpu_seconds(daemon.pids) - c1) / args.idle, 3)
        # one broadcast ALERT to every client
        c2 = cpu_seconds(daemon.pids)
        sent = time.time() * 1000
        r = http_json(f"http://127.0.0.1:{daemon.api}/api/broadcast", {"type": "ALERT", "data": {"id": "bench", "mark": 1, "message": "all"}})
        out["broadcast_recipients_reported"] = r.get("recipients")
        got = [h.wait_for(lambda l: l.get("mark") == 1, timeout=120) for h in holders]
        out["broadcast_reach_all_ms"] = round(max(g["lastAt"] for g in got) - sent, 1)
        out["broadcast_first_ms"] = round(min(g["firstAt"] for g in got) - sent, 1)
        out["broadcast_received"] = sum(g["got"] for g in got)
        out["broadcast_cpu_s"] = round(cpu_seconds(daemon.pids) - c2, 3)
    finally:
        sent_wall = time.time() * 1000
        code, seconds = daemon.stop()
        out["sigterm_exit"], out["sigterm_s"] = code, round(seconds, 2)
        out.update(close_frames(holders, sent_wall))
        for h in holders:
            h.close()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
