"""``uipd run``, ``check-config``, ``plugins`` and ``--version``: the real console script as a process."""

import os
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
import trio

from tests.cli.support import one_line, run_cli
from tests.runtime.support import ROOT, UIPD, wait_ready
from tests.wsclient import RawClient
from uipd.testing import free_port


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("uipd ")


def test_plugins_lists_bundled_sources():
    r = run_cli("plugins")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert "sim" in names and "file" in names


def test_check_config_ok_and_errors(tmp_path):
    r = run_cli("check-config", "uipd.toml")
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "5000"\n')
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert f"{bad}: server.port: expected an integer" in r.stderr
    bad.write_text('[sources.city]\nplugin = "sim"\nspeeed = 2.0\n')
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2 and "sources.city: unknown key 'speeed'" in r.stderr
    r = run_cli("run", "-c", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such file" in r.stderr


async def test_default_config_serves_live_simulated_city_and_stops_on_sigterm():
    port, api_port = free_port(), free_port()
    proc = subprocess.Popen(
        [UIPD, "run", "-c", "uipd.toml", "--set", f"server.port={port}", "--set", f"api.port={api_port}",
         "--set", "server.host=\"127.0.0.1\"", "--set", "sources.city.speed=30.0"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = None
        with trio.fail_after(20):
            while client is None:
                try:
                    client = await RawClient.connect(port)
                except OSError:
                    await trio.sleep(0.1)
        hello = await client.recv_json()
        assert hello["type"] == "connection"
        assert hello["topics"] == ["cameras", "weather", "airQuality", "accidents", "patterns", "congestion"]
        snapshot = await client.recv_json(timeout=10)
        if not snapshot["data"]["cameras"]:  # connected before the simulation published its first state
            snapshot = None
        updates = {}
        with trio.fail_after(20):
            while len(updates) < 3:
                msg = await client.recv_json(timeout=20)
                if msg["type"] == "UPDATE":
                    updates.setdefault(msg["topic"], msg)
        assert all(u["seq"] >= 1 and u["data"] or u.get("removed") for u in updates.values())
        if snapshot is not None:
            cams = snapshot["data"]["cameras"]
            assert len(cams) >= 500
            assert all(10.64 <= c["location"]["lat"] <= 11.0 and 106.45 <= c["location"]["lng"] <= 106.85 for c in cams)
        proc.send_signal(signal.SIGTERM)
        assert await client.expect_close(timeout=10) == 1001
        t0 = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 6
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
    assert f"ws://127.0.0.1:{port}" in stderr
    assert "source city (plugin sim) starting" in stderr


# -- exits: one line, a code that says whose fault it is, no traceback ---------------------------


def test_check_config_catches_what_the_config_means(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in [
        # passed before, then every client got 101 + 1006 and the daemon died on a heartbeat
        ('[server]\ndefault_topics = ["cameraz"]\n[sources.city]\nplugin = "sim"\n',
         "server.default_topics[0]: unknown topic 'cameraz'; known topics: all, cameras, weather"),
        ("[server]\npaths = []\n", "server: paths must list at least one path"),
        (f'[auth]\nmode = "jwt"\njwt_algorithm = "RS256"\njwt_key_file = "{bad}"\n', "auth.jwt_key_file: expected an RSA public key (PEM)"),
        ('[auth]\nmode = "token"\n', 'auth.tokens: mode = "token" needs tokens'),
        # passed before: NaN compares false with every bound (a NaN request_timeout killed the
        # daemon at its first HTTP request, a NaN jwt_leeway let expired tokens in)
        ("[api]\nrequest_timeout = nan\n", "api: 'request_timeout' must be a finite number: nan"),
        ("[auth]\njwt_leeway = nan\n", "auth: 'jwt_leeway' must be a finite number: nan"),
        ("[heartbeat]\ntimeout = inf\n", "heartbeat: 'timeout' must be a finite number: inf"),
        ("[server]\nport = 6000\n[api]\nport = 6000\n", "server.port and api.port are both 6000"),  # then: address in use
        ('[broker]\nkind = "redis"\nurl = "notaurl"\n', "broker: 'url' must be a redis://"),  # then: Redis unreachable ()
    ]:
        bad.write_text(text)
        r = run_cli("check-config", str(bad))
        assert r.returncode == 2
        assert one_line(r.stderr).startswith(f"uipd: config error: {bad}: {message}")


def test_usage_errors_are_one_line_and_exit_2():
    r = run_cli("run", "--no-such-flag")
    assert r.returncode == 2
    assert one_line(r.stderr) == "uipd: unrecognized arguments: --no-such-flag (see uipd --help)"
    r = run_cli("frobnicate")
    assert r.returncode == 2 and one_line(r.stderr).startswith("uipd: argument command: invalid choice: 'frobnicate'")


def _config(tmp_path, ws_port, api_port, extra=""):
    path = tmp_path / "u.toml"
    path.write_text(f'[server]\nhost = "127.0.0.1"\nport = {ws_port}\n[api]\nport = {api_port}\n{extra}')
    return path


@pytest.mark.parametrize("which", ["ws", "api"])
def test_a_port_in_use_is_one_line_and_exit_1(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ws, api = (busy, 0) if which == "ws" else (0, busy)
        r = run_cli("run", "-c", str(_config(tmp_path, ws, api)))
        listener = "WebSocket listener" if which == "ws" else "HTTP API listener"
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr and "Exception Group" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if "ERROR" in line or "CRITICAL" in line]
        assert len(errors) == 1 and f"cannot serve: [Errno 98] {listener} 127.0.0.1:{busy}: Address already in use" in errors[0], r.stderr
        # with [log] level = "debug" the traceback is there, for whoever debugs
        r = run_cli("run", "-c", str(_config(tmp_path, ws, api, '[log]\nlevel = "debug"\n')))
        assert r.returncode == 1 and "Traceback" in r.stderr


def test_an_unreadable_tls_file_is_a_start_failure(tmp_path):
    # a directory where the key should be: unreadable for anyone (root included), exit 1, one line
    extra = f'tls_cert = "{tmp_path}"\ntls_key = "{tmp_path}"\n'
    path = tmp_path / "u.toml"
    path.write_text(f'[server]\nhost = "127.0.0.1"\nport = 0\n{extra}[api]\nport = 0\n')
    r = run_cli("run", "-c", str(path))
    assert r.returncode == 1
    assert one_line(r.stderr) == f"uipd: cannot start: {path}: server.tls_cert: cannot read {tmp_path}: Is a directory"
    r = run_cli("check-config", str(path))  # the check names it too; there everything is exit 2
    assert r.returncode == 2 and "server.tls_cert: cannot read" in one_line(r.stderr)


def test_an_address_the_host_does_not_have_is_one_line_and_exit_1(tmp_path):
    # like EACCES on a privileged port (not testable as root, which these tests run as): an OSError
    # from the bind, reported with the listener and the address
    path = tmp_path / "u.toml"
    path.write_text('[server]\nhost = "192.0.2.1"\nport = 5000\n[api]\nport = 0\n')
    r = run_cli("run", "-c", str(path))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot serve: [Errno 99] WebSocket listener 192.0.2.1:5000: Cannot assign requested address" in r.stderr


def test_a_second_sigterm_exits_130_without_a_traceback(tmp_path):
    ws, api = free_port(), free_port()
    # a long drain: a client that never answers the close keeps it going for close_timeout
    path = tmp_path / "u.toml"
    path.write_text(f'[server]\nhost = "127.0.0.1"\nport = {ws}\ndrain_timeout = 30.0\nclose_timeout = 20.0\n[api]\nport = {api}\n')
    proc = subprocess.Popen([UIPD, "run", "-c", str(path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{api}")
        deadline = time.monotonic() + 20
        silent = socket.create_connection(("127.0.0.1", ws), timeout=5)
        silent.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert silent.recv(4096).startswith(b"HTTP/1.1 101")
        proc.send_signal(signal.SIGTERM)
        while httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=2).json().get("shutting_down") is not True:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 130
        assert time.monotonic() - t0 < 5  # at once, not after the drain
        silent.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
    assert "second SIGTERM: stopping now" in stderr
    assert "Traceback" not in stderr, stderr


# -- SIGHUP before the reload watcher and during the drain ---------------------------------------


class _TokenFifo:
    """A token file that is a FIFO: each read of it by the daemon blocks in ``open`` until this
    writes it.  ``opened`` is set once the daemon is in its first read (in ``uipd run``, the config
    being loaded), and that first read is held until ``release``: the test can signal the daemon
    at a known point of its startup, without sleeping."""

    def __init__(self, path, token):
        os.mkfifo(path)
        self.path, self.token = path, token
        self.opened, self.released, self.stopping = threading.Event(), threading.Event(), False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            fd = os.open(self.path, os.O_WRONLY)  # returns once the daemon opens it for reading
            try:
                if self.stopping:
                    return
                self.opened.set()
                self.released.wait()
                os.write(fd, f"{self.token}\n".encode())
            except BrokenPipeError:
                # The open went through on a reader that was just closing (the previous read's),
                # or close() dropped the FIFO: serve the next reader, or end when stopping.
                continue
            finally:
                os.close(fd)

    def release(self):
        self.released.set()

    def close(self):
        self.stopping = True
        self.release()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets a pending open return
        self.thread.join(timeout=5)
        os.close(fd)


def test_sighup_before_the_reload_watcher_is_applied_once_running_and_during_the_drain_logged(tmp_path):
    """SIGHUP's default action ended the daemon (exit 129, nothing logged) when it came before the
    watcher was installed, ~0.8 s into ``uipd run``; during the drain it was dropped silently."""
    ws, api = free_port(), free_port()
    tokens = _TokenFifo(tmp_path / "tokens", "tok")
    path = tmp_path / "u.toml"
    path.write_text(f'[server]\nhost = "127.0.0.1"\nport = {ws}\ndrain_timeout = 5.0\nclose_timeout = 1.0\n'
                    f'[api]\nport = {api}\n[auth]\nmode = "token"\ntoken_file = "{tokens.path}"\n')
    proc = subprocess.Popen([UIPD, "run", "-c", str(path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert tokens.opened.wait(timeout=20)
        proc.send_signal(signal.SIGHUP)  # while the config is being loaded: long before the watcher
        tokens.release()
        wait_ready(f"http://127.0.0.1:{api}")
        # a client that never answers the close keeps the drain going for close_timeout
        silent = socket.create_connection(("127.0.0.1", ws), timeout=5)
        silent.sendall(b"GET /?token=tok HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert silent.recv(4096).startswith(b"HTTP/1.1 101")
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=2).json().get("shutting_down") is not True:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=10) == 0
        silent.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
        tokens.close()
    lines = stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in lines if "SIGHUP" in line] == [
        "SIGHUP received while starting: reloading now",
        "SIGHUP received while draining: ignored",
    ], stderr
    assert any("reload done" in line for line in lines) and "Traceback" not in stderr, stderr
