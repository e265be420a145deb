"""Fan-out through 1 and 2 workers: server CPU per delivery and in total (issue 16).

    .venv/bin/python bench/workers.py [--clients 2000] [--rate 200] [--messages 2000] [--json FILE]

Runs the kit's load generator (``loadgen.js --scenario fanout``: N clients subscribed to
``accidents``, M UPDATEs of 300 B at R/s through the HTTP API) against, in turn: one process
with the memory broker (the default daemon), one process on the Redis broker, and
``--workers 2`` on the Redis broker (the kernel spreads the clients over both; the publishes
go through whichever worker the API connection lands on).  The server CPU is the sum over
every process of the daemon (supervisor and workers) from /proc, sampled every 50 ms, over the
generator's publish window (publish start to the last delivery).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgroup import RESULTS, Daemon, cpu_seconds, kit  # noqa: E402

CASES = (("1 process, memory broker", 1, "memory"), ("1 process, Redis broker", 1, "redis"), ("2 workers, Redis broker", 2, "redis"))


class Sampler:
    """(wall time, CPU seconds of every process of the daemon, per worker) every 50 ms."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon, self.samples, self.stopped = daemon, [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pids = self.daemon.pids
        workers = self.daemon.worker_pids
        while not self.stopped:
            self.samples.append((time.time(), cpu_seconds(pids), [cpu_seconds([p]) for p in workers]))
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopped = True
        self.thread.join()

    def at(self, t: float) -> tuple[float, list[float]]:
        """The sample nearest before ``t``."""
        best = self.samples[0]
        for s in self.samples:
            if s[0] <= t:
                best = s
        return best[1], best[2]


def run_case(work: Path, label: str, workers: int, broker: str, args: argparse.Namespace) -> dict:
    daemon = Daemon(workers, broker, log=RESULTS / f"workers-{workers}-{broker}.log")
    out_file = RESULTS / f"workers-{workers}-{broker}.json"
    sampler = Sampler(daemon)
    try:
        subprocess.run([
            "node", str(work / "loadgen" / "loadgen.js"), "--ws", f"ws://127.0.0.1:{daemon.port}/", "--api", f"http://127.0.0.1:{daemon.api}",
            "--scenario", "fanout", "--clients", str(args.clients), "--rate", str(args.rate), "--messages", str(args.messages), "--size", "300",
            "--publish-seconds", "20", "--drain-max", "20", "--pid", str(daemon.proc.pid), "--out", str(out_file),
        ], check=True, stdout=subprocess.DEVNULL, timeout=300)
    finally:
        sampler.stop()
        daemon.stop()
    r = json.loads(out_file.read_text())
    # The generator's publish window: it starts 200 ms + connect + 500 ms after its start.
    started = datetime.datetime.fromisoformat(r["startedAt"].replace("Z", "+00:00")).timestamp()
    t0 = started + 0.2 + r["connectMs"] / 1000 + 0.5
    t1 = t0 + r["windowSec"] + 0.05
    (c0, w0), (c1, w1) = sampler.at(t0), sampler.at(t1)
    deliveries = r["deliveriesReceived"]
    cpu = c1 - c0
    return {
        "case": label, "workers": workers, "broker": broker, "clients": r["connected"], "published": r["publish"]["ok"],
        "deliveries": deliveries, "loss": r["loss"], "out_of_order": r["outOfOrder"], "deliveries_per_s": r["deliveriesPerSec"],
        "p50_ms": r["latencyMs"]["p50"], "p99_ms": r["latencyMs"]["p99"],
        "server_cpu_s": round(cpu, 2), "server_cpu_pct": round(100 * cpu / max(1e-9, t1 - t0), 1),
        "server_cpu_ms_per_1000_deliveries": round(1000 * cpu / max(1, deliveries / 1000), 2),
        "per_worker_cpu_s": [round(b - a, 2) for a, b in zip(w0, w1)],
        "loadgen_cpu_s_per_1000_deliveries_main_pid": r["server"]["cpuSecPer1000Deliveries"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--json", default=str(RESULTS / "workers.json"))
    args = ap.parse_args()
    work = kit()
    results = [run_case(work, label, w, b, args) for label, w, b in CASES]
    print(f"{'case':28} {'deliv/s':>9} {'p99 ms':>8} {'CPU s':>7} {'CPU %':>6} {'CPU ms/1000':>11}  per worker")
    for r in results:
        print(f"{r['case']:28} {r['deliveries_per_s']:>9} {r['p99_ms']:>8} {r['server_cpu_s']:>7} {r['server_cpu_pct']:>6} {r['server_cpu_ms_per_1000_deliveries']:>11}  {r['per_worker_cpu_s']}")
    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
