"""Running the real ``uipd`` console script as a process, with a notify socket the test binds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
UIPD = str(Path(sys.executable).with_name("uipd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A TOML file from {"server": {...}, "sources.city": {...}} (values: str, numbers, bools, lists, inline tables)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class NotifySocket:
    """A unix datagram socket standing in for systemd's: collects what the daemon notifies."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[tuple[float, list[str]]] = []

    def receive(self, timeout: float) -> list[str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        fields = data.decode().split("\n")
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, wanted: str, timeout: float = 20.0) -> list[str]:
        """The next datagram holding the field ``wanted`` (or a field starting with it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self.receive(deadline - time.monotonic())
            if fields is not None and any(f == wanted or f.startswith(wanted) for f in fields):
                return fields
        raise AssertionError(f"no {wanted!r} notification within {timeout} s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self.sock.close()


class Uipd:
    """``uipd run -c CONFIG`` as a subprocess."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, args: list[str] | None = None, **popen: Any) -> None:
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            args or [UIPD, "run", "-c", str(config)],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
        )
        self.terminated = False

    def signal(self, signum: int) -> None:
        self.terminated = self.terminated or signum == signal.SIGTERM
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> tuple[int, str]:
        """SIGTERM (unless sent already: a second one stops at once) and wait for the exit."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def wait_ready(api: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{api} not ready within {timeout} s")


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from a /metrics body."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
