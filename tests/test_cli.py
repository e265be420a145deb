"""The real ``uipd`` console script as a process: run the default config, check-config, plugins."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from tests.wsclient import RawClient
from uipd.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
UIPD = str(Path(sys.executable).with_name("uipd"))




def run_cli(*args, **kw):
    return subprocess.run([UIPD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, **kw)


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
