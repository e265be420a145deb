"""SIGTERM with N idle clients connected to one ``uipd run`` (one process, the memory broker).

    .venv/bin/python bench/drain.py [--clients 19000] [--drain-timeout 5] [--py-spy OUT] [--json FILE]

Starts ``uipd run`` with the kit's config (bench/common.sh's uipd-bench.toml, log level info),
connects N idle clients with one bench/holder.js (the kit's minimal client; one process keeps
under the 20,000 descriptors a process may hold here), then sends the daemon SIGTERM and reports:
seconds from SIGTERM to exit and the exit code (the issue asks for exit 0 within
``drain_timeout``), the daemon's CPU seconds for the drain (its rusage at exit minus before), how
many clients got a close frame and with which code (all 1001), and the time from SIGTERM to the
first and the last close frame received and to the last TCP connection's end.  ``--py-spy OUT``
records the drain with py-spy (raw folded stacks) from just before the SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchgroup import RESULTS, ROOT, UIPD, cpu_seconds, free_ports, http_json, kit  # noqa: E402
from many import Holder, close_frames  # noqa: E402

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def raise_fd_limit() -> int:
    """The soft descriptor limit up to the hard one (the daemon and the holder inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=19000)
    ap.add_argument("--drain-timeout", type=float, default=5.0, help="[server] drain_timeout")
    ap.add_argument("--py-spy", default="", help="record the drain with py-spy into this file (raw format)")
    ap.add_argument("--uipd", default=UIPD, help="the uipd command (another checkout's, say)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    limit = raise_fd_limit()
    if args.clients > limit - 500:
        sys.exit(f"{args.clients} clients: over the {limit} descriptors one process (daemon or holder) may hold here")
    work = kit()
    port, api = free_ports()
    log_path = RESULTS / f"drain-{args.clients}.log"
    cmd = [
        args.uipd, "run", "-c", str(work / "uipd-bench.toml"), "--set", f"server.port={port}", "--set", f"api.port={api}",
        "--set", 'log.level="info"', "--set", f"server.drain_timeout={args.drain_timeout}",
        "--set", f"server.max_clients={limit - 500}",
    ]
    out: dict = {"clients": args.clients, "drain_timeout_s": args.drain_timeout}
    log = open(log_path, "w")
    daemon = subprocess.Popen(cmd, stdout=log, stderr=log)
    holder: Holder | None = None
    spy: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"uipd exited with {daemon.returncode}; see {log_path}")
            try:
                http_json(f"http://127.0.0.1:{api}/api/stats", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        t0 = time.monotonic()
        holder = Holder(work, port, args.clients, "127.0.0.1")
        ready = holder.wait_for(lambda l: "ready" in l, timeout=900)
        out["open_all_s"] = round(time.monotonic() - t0, 2)
        out["connected"], out["failed"] = ready["ready"], ready["failed"]
        out["stats_clients"] = http_json(f"http://127.0.0.1:{api}/api/stats", timeout=10)["clients"]
        time.sleep(2.0)  # the connect storm's garbage and writes settle
        if args.py_spy:
            spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(daemon.pid), "-f", "raw", "-r", "200", "-o", args.py_spy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches
        cpu0 = cpu_seconds([daemon.pid])
        sent_wall = time.time() * 1000
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        # wait4, not Popen.wait: the daemon's rusage at exit gives the drain's CPU.
        deadline = sent + 30
        while True:
            pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                daemon.kill()
                pid, status, usage = os.wait4(daemon.pid, 0)
                out["killed"] = True
                break
            time.sleep(0.005)
        exit_s = time.monotonic() - sent
        daemon.returncode = os.waitstatus_to_exitcode(status)
        out["sigterm_exit"] = daemon.returncode
        out["sigterm_to_exit_s"] = round(exit_s, 3)
        out["within_drain_timeout"] = daemon.returncode == 0 and exit_s <= args.drain_timeout
        out["drain_cpu_s"] = round(usage.ru_utime + usage.ru_stime - cpu0, 2)
        out.update(close_frames([holder], sent_wall))
    finally:
        if daemon.poll() is None and daemon.returncode is None:
            daemon.kill()
            daemon.wait()
        if spy is not None:
            try:
                spy.wait(20)
            except subprocess.TimeoutExpired:
                spy.kill()
        if holder is not None:
            holder.close()
        log.close()
    out["log_drain"] = [line.rstrip() for line in log_path.read_text().splitlines() if "drain" in line or "stopped" in line or "closing" in line][-12:]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
