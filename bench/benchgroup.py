"""Shared by bench/workers.py and bench/many.py: a uipd daemon (one process, or a supervisor and
its workers) on free ports, its processes' CPU and RSS from /proc, the kit's scratch copy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UIPD = str(ROOT / ".venv" / "bin" / "uipd")
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/uipd-bench"))
RESULTS = ROOT / "bench" / "results"
TOPICS = ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]
TICK = os.sysconf("SC_CLK_TCK")


def kit() -> Path:
    """The kit's scratch copy with its npm packages (bench/common.sh makes it)."""
    if not (WORK / "loadgen" / "node_modules").is_dir():
        subprocess.run(["bash", "-c", f"source {ROOT}/bench/common.sh"], check=True)
    return WORK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports() -> tuple[int, int]:
    """Two distinct free ports (two ``free_port`` calls can return the same one)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def http_json(url: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Daemon:
    """``uipd run`` with ``workers`` processes (1: no supervisor) and the given broker."""

    def __init__(self, workers: int, broker: str = "redis", log: Path | None = None, extra: dict[str, object] | None = None, **server: object) -> None:
        self.workers = workers
        self.port, self.api = free_ports()
        sets = {
            "server.host": '"127.0.0.1"', "server.port": self.port, "api.port": self.api, "log.level": '"warning"',
            "server.topics": json.dumps(TOPICS), "server.workers": workers, "broker.kind": f'"{broker}"',
            "broker.prefix": f'"bench-{uuid.uuid4().hex[:8]}"',
            **{f"server.{k}": json.dumps(v) for k, v in server.items()},
            **{k: json.dumps(v) for k, v in (extra or {}).items()},
        }
        empty = WORK / "empty.toml"  # every key comes from --set
        empty.write_text("")
        args = [UIPD, "run", "-c", str(empty)]
        for k, v in sets.items():
            args += ["--set", f"{k}={v}"]
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=self.log)
        self.wait_ready()

    @property
    def pids(self) -> list[int]:
        """Every process of the daemon: the supervisor and its workers, or the one process."""
        return [self.proc.pid, *children(self.proc.pid)]

    @property
    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.workers > 1 else [self.proc.pid]

    def stats(self) -> dict:
        return http_json(f"http://127.0.0.1:{self.api}/api/stats", timeout=10)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uipd exited with {self.proc.returncode}")
            try:
                s = self.stats()
                if self.workers == 1 or len(s.get("workers", {})) == self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("uipd did not get ready")

    def stop(self, timeout: float = 60) -> tuple[int | None, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        self.log.close()
        return code, time.monotonic() - start
