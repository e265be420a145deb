"""The notify protocol against a real unix datagram socket, socket activation with inherited
sockets, and the shipped unit files; the real ``uipd`` console script as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.runtime.support import ROOT, UIPD, NotifySocket, Uipd, free_port, wait_ready, write_config
from tests.wsclient import RawClient
from uipd.runtime import systemd


def base_config(tmp_path: Path, **server) -> tuple[Path, int, int]:
    ws, api = free_port(), free_port()
    config = write_config(tmp_path / "uipd.toml", {
        "server": {"host": "127.0.0.1", "port": ws, "topics": ["accidents", "weather"], "drain_timeout": 2.0, **server},
        "api": {"port": api},
        "log": {"format": "json", "levels": {"uipd.runtime.systemd": "debug"}},
    })
    return config, ws, api


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_ready_status_watchdog_stopping(tmp_path, notify):
    config, ws, api = base_config(tmp_path)
    started = time.monotonic()
    daemon = Uipd(config, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"})
    try:
        ready = notify.wait_for("READY=1")
        # READY comes once the listeners are open and the sources started
        assert httpx.get(f"http://127.0.0.1:{api}/healthz").status_code == 200
        status = [f for f in ready if f.startswith("STATUS=")]
        assert status and "0 clients" in status[0] and "2 topics" in status[0]
        # WATCHDOG=1 every 0.2 s (half of WATCHDOG_USEC), each after the accept probe
        t0 = time.monotonic()
        pings = []
        while time.monotonic() - t0 < 1.5:
            fields = notify.receive(0.5)
            if fields and "WATCHDOG=1" in fields:
                pings.append(time.monotonic())
        assert 5 <= len(pings) <= 10, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.45, gaps
        # STATUS= refreshes: it counts a connected client
        import trio

        async def one_client():
            client = await RawClient.connect(ws)
            try:
                with trio.fail_after(10):
                    while True:
                        fields = await trio.to_thread.run_sync(notify.receive, 1.0)
                        if fields and any(f.startswith("STATUS=1 clients") for f in fields):
                            return
            finally:
                await client.aclose()

        trio.run(one_client)
    finally:
        daemon.signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING=1")
        code, err = daemon.stop()
    assert code == 0, err
    assert any(f.startswith("STATUS=draining") for f in stopping)
    # [log] format = "json": one JSON object per line
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"].startswith("uipd listening") for r in records)
    assert time.monotonic() - started < 30


def test_abstract_notify_socket(tmp_path):
    config, ws, api = base_config(tmp_path)
    name = f"uipd-test-{os.getpid()}-{time.monotonic_ns()}"
    notify = NotifySocket(abstract=name)
    daemon = Uipd(config, env={"NOTIFY_SOCKET": notify.address})
    try:
        notify.wait_for("READY=1")
    finally:
        code, err = daemon.stop()
        notify.close()
    assert code == 0, err


def test_no_notify_socket_no_watchdog_is_fine(tmp_path):
    config, ws, api = base_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    daemon = subprocess.Popen([UIPD, "run", "-c", str(config)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{api}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=15)
    assert daemon.returncode == 0, err


# -- socket activation ----------------------------------------------------------------------------

# Stands in for systemd: moves the passed sockets to descriptors 3 and 4, sets LISTEN_* for *this*
# process id, and becomes uipd (exec keeps the pid, as systemd's fork + exec does).
ACTIVATE = """
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i, inheritable=True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.argv[3], sys.argv[3:])
"""


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def activated(config: Path, socks: list[socket.socket], names: str, notify: NotifySocket) -> subprocess.Popen:
    fds = [s.fileno() for s in socks]
    return subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, ",".join(map(str, fds)), names, UIPD, "run", "-c", str(config)],
        cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": notify.address}, pass_fds=fds,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_socket_activation_uses_inherited_sockets_across_a_restart(tmp_path, notify):
    # The config names ports that are never bound: the inherited sockets are used instead.
    config, unused_ws, unused_api = base_config(tmp_path)
    ws_sock, api_sock = listening_socket(), listening_socket()
    ws_port, api_port = ws_sock.getsockname()[1], api_sock.getsockname()[1]
    import trio

    async def handshake() -> dict:
        client = await RawClient.connect(ws_port)
        try:
            return await client.recv_json()
        finally:
            await client.aclose()

    first = activated(config, [ws_sock, api_sock], "ws:api", notify)
    try:
        notify.wait_for("READY=1")
        assert trio.run(handshake)["type"] == "connection"
        assert httpx.get(f"http://127.0.0.1:{api_port}/readyz").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{unused_api}/healthz")
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=15)
    assert first.returncode == 0, err

    # Between the two runs the socket stays open (here, as systemd keeps it): a client that
    # connects now waits in the backlog and is served by the next run.
    early = socket.create_connection(("127.0.0.1", ws_port))
    early.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    second = activated(config, [ws_sock], "ws", notify)  # only the WebSocket socket: the API binds its port
    try:
        notify.wait_for("READY=1")
        early.settimeout(10)
        assert early.recv(4096).startswith(b"HTTP/1.1 101")
        assert httpx.get(f"http://127.0.0.1:{unused_api}/healthz").status_code == 200
    finally:
        early.close()
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=15)
        ws_sock.close()
        api_sock.close()
    assert second.returncode == 0, err


def test_listen_fds_parsing(monkeypatch):
    pid = str(os.getpid())
    assert systemd.listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "2"}) == {}  # another process's
    assert systemd.listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "0"}) == {}
    # names given in any order; unnamed ones are taken in order (ws, then api)
    assert systemd.listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""}) == {}
    r, w = os.pipe(), os.pipe()  # make sure fds 3 and 4 exist so set_inheritable works
    try:
        if not all(_fd_open(fd) for fd in (3, 4)):
            pytest.skip("descriptors 3 and 4 are not open in this test process")
        assert systemd.listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "api:ws"}) == {"api": 3, "ws": 4}
        assert systemd.listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "uipd.socket:uipd.socket"}) == {"ws": 3, "api": 4}
        assert systemd.listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "1"}) == {"ws": 3}
    finally:
        for fd in (*r, *w):
            os.close(fd)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_watchdog_period():
    assert systemd.watchdog_period({}) is None
    assert systemd.watchdog_period({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert systemd.watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0


# -- the shipped units ----------------------------------------------------------------------------

UNITS = ROOT / "packaging" / "systemd"


def test_unit_files_verify(tmp_path):
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        pytest.skip("systemd-analyze is not installed")
    for unit in UNITS.glob("*"):
        text = unit.read_text()
        # ExecStart must name an existing executable for verify: point it at this venv's uipd
        (tmp_path / unit.name).write_text(text.replace("/opt/uipd/.venv/bin/uipd", UIPD))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"uipd.service", "uipd.socket", "uipd-api.socket"} <= set(names)
    r = subprocess.run([analyze, "verify", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    output = r.stdout + r.stderr
    if r.returncode != 0 and ("Failed to" in output and "manager" in output.lower() or "System has not been booted" in output):
        pytest.skip(f"systemd-analyze verify cannot run in this container: {output.strip()[:200]}")
    assert r.returncode == 0, output
    assert "Unknown" not in output and "ignoring" not in output, output
    service = (UNITS / "uipd.service").read_text()
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "LimitNOFILE=65536", "DynamicUser=yes", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in service
    stop = int(next(l for l in service.splitlines() if l.startswith("TimeoutStopSec=")).split("=")[1].rstrip("s"))
    assert stop > 5.0  # longer than the default drain_timeout
