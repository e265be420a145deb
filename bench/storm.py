"""A connection storm's effect on live fan-out (issue 16 item 2).

    .venv/bin/python bench/storm.py [--server uipd|ref-node] [--subscribers 1000] [--rate 50] [--storm 15000] [--json FILE]

Runs the kit's fanout scenario (loadgen: ``--subscribers`` clients holding every topic, 300-byte
UPDATEs at ``--rate`` a second for ``--seconds``) against one uipd process twice: once alone,
once while a holder process (bench/holder.js, from its own source address) opens ``--storm``
new connections as fast as the daemon takes them, starting ``--storm-after`` seconds into the
run.  Reports both runs' delivery latency (publish request sent to receipt: p50/p90/p99/max),
losses and the storm's connect time, so the difference is what the storm cost the connected
clients.  All three processes share this machine's 2 cores: the storm's own generator competes
for CPU too, which is part of what a real storm on one host looks like.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgroup import RESULTS, Daemon, cpu_seconds, free_ports, http_json, kit  # noqa: E402
from many import Holder  # noqa: E402


class RefNode:
    """The kit's Node ``ws`` reference server, as the peer to compare with (``--server ref-node``)."""

    def __init__(self, work: Path, log: Path) -> None:
        self.port, self.api = free_ports()
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            ["node", str(work / "ref-node" / "server.js"), "--port", str(self.port), "--api-port", str(self.api),
             "--snapshot-file", str(work / "data" / "topics-empty.json")],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                http_json(f"http://127.0.0.1:{self.api}/api/stats", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("ref-node did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


def fanout(work: Path, daemon: Daemon | RefNode, args: argparse.Namespace, out: Path, storm: int) -> dict:
    """One fanout run; with ``storm`` > 0 a holder opens that many connections during it."""
    cmd = [
        "node", str(work / "loadgen" / "loadgen.js"), "--ws", f"ws://127.0.0.1:{daemon.port}/", "--api", f"http://127.0.0.1:{daemon.api}",
        "--pid", str(daemon.proc.pid), "--name", "uipd", "--out", str(out), "--max-seconds", "200",
        "--scenario", "fanout", "--clients", str(args.subscribers), "--rate", str(args.rate),
        "--messages", str(int(args.rate * args.seconds)), "--size", "300", "--publish-seconds", str(args.seconds), "--drain-max", "30",
    ]
    cpu0 = cpu_seconds([daemon.proc.pid])
    loadgen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    holder = None
    storm_result: dict = {}
    try:
        if storm:
            time.sleep(args.storm_after)
            t0 = time.monotonic()
            holder = Holder(work, daemon.port, storm, "127.0.0.20")
            ready = holder.wait_for(lambda line: "ready" in line, timeout=300)
            storm_result = {"storm_connected": ready["ready"], "storm_failed": ready["failed"], "storm_retried_503": ready.get("retried", 0),
                            "storm_open_s": round(time.monotonic() - t0, 2)}
        loadgen.wait(300)
    finally:
        if loadgen.poll() is None:
            loadgen.kill()
        if holder is not None:
            holder.close()
    result = json.loads(out.read_text())
    return {
        "storm": storm, **storm_result,
        "subscribers": result["connected"], "published": result["publish"]["ok"],
        "deliveries": result["deliveriesReceived"], "loss": result["loss"], "out_of_order": result["outOfOrder"],
        "latency_ms": {k: round(v, 1) for k, v in result["latencyMs"].items() if k != "n"},
        "api_latency_ms": {k: round(v, 1) for k, v in result["publish"]["apiLatencyMs"].items() if k != "n"},
        "server_cpu_s": round(cpu_seconds([daemon.proc.pid]) - cpu0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50.0, help="UPDATEs a second")
    ap.add_argument("--seconds", type=float, default=15.0, help="publishing time")
    ap.add_argument("--storm", type=int, default=15000, help="connections the storm opens")
    ap.add_argument("--storm-after", type=float, default=2.0, help="seconds into the run the storm starts")
    ap.add_argument("--server", choices=["uipd", "ref-node"], default="uipd")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    work = kit()
    runs = []
    for storm in (0, args.storm):
        log = RESULTS / f"storm-{args.server}-{storm}.log"
        daemon = Daemon(1, "memory", log=log, max_clients=19500) if args.server == "uipd" else RefNode(work, log)
        try:
            time.sleep(1.0)
            runs.append(fanout(work, daemon, args, Path(f"/tmp/storm-{storm}.json"), storm))
        finally:
            daemon.stop()
    out = {"server": args.server, "subscribers": args.subscribers, "rate": args.rate, "seconds": args.seconds, "runs": runs}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
