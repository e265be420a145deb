"""The operator commands against a running daemon: ``uipd tail``, ``uipd publish``, ``uipd stats``;
each fails with one clear line (no traceback) on a wrong port or a wrong key/token."""

from __future__ import annotations

import json
import subprocess

import trio

from tests.conftest import api_client, connect
from tests.operating.support import ROOT, UIPD, free_port, write_config

KEY = "api-key-1"
TOKEN = "ws-token-1"
CONFIG = {"api": {"key": KEY}, "auth": {"mode": "token", "tokens": [TOKEN]}}


async def uipd(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return await trio.run_process([UIPD, *args], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False, stdin=stdin)


def one_line_failure(r: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"uipd {command}: ")
    for needle in needles:
        assert needle in err, err


async def test_stats_prints_a_table(daemon_factory):
    async with daemon_factory(CONFIG) as d:
        client = await connect(d, f"/?token={TOKEN}")
        api = f"http://127.0.0.1:{d.api_port}"
        r = await uipd("stats", "--api", api, "--key", KEY)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode().splitlines()
        assert out[0] == "clients: 1"
        header = out[2].split()
        assert header == ["topic", "subscribers", "entities", "seq"]
        rows = {line.split()[0]: line.split()[1:] for line in out[3:] if line.strip()}
        assert rows["accidents"] == ["1", "0", "0"]
        r = await uipd("stats", "--api", api, "--key", KEY, "--json")
        assert json.loads(r.stdout)["clients"] == 1
        await client.aclose()

        one_line_failure(await uipd("stats", "--api", api, "--key", "wrong"), "stats", "401")
        one_line_failure(await uipd("stats", "--api", api), "stats", "401")
        one_line_failure(await uipd("stats", "--api", f"http://127.0.0.1:{free_port()}", "--key", KEY), "stats", "cannot connect")


async def test_publish_from_argument_file_and_stdin(daemon_factory, tmp_path):
    async with daemon_factory(CONFIG) as d:
        client = await connect(d, f"/?token={TOKEN}")
        api = ["--api", f"http://127.0.0.1:{d.api_port}", "--key", KEY]
        r = await uipd("publish", "--topic", "accidents", "--alert", *api, '{"message": "crash on Le Loi"}')
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().strip() == "published ALERT to accidents: seq 1, 1 recipient(s)"
        msg = await client.recv_json()
        assert msg["type"] == "ALERT" and msg["data"] == {"message": "crash on Le Loi"} and msg["seq"] == 1

        data = tmp_path / "cams.json"
        data.write_text(json.dumps([{"id": "c1", "status": "ok"}, {"id": "c2", "status": "down"}]))
        r = await uipd("publish", "-t", "cameras", *api, f"@{data}")
        assert r.returncode == 0, r.stderr
        msg = await client.recv_json()
        assert msg["type"] == "UPDATE" and msg["topic"] == "cameras" and len(msg["data"]) == 2

        r = await uipd("publish", "-t", "cameras", "--removed", "c2", *api, "-", stdin=b'{"id": "c1", "status": "slow"}')
        assert r.returncode == 0, r.stderr
        msg = await client.recv_json()
        assert msg["data"] == [{"id": "c1", "status": "slow"}] and msg["removed"] == ["c2"]

        one_line_failure(await uipd("publish", "-t", "accidents", "--api", api[1], "--key", "wrong", "{}"), "publish", "401")
        one_line_failure(await uipd("publish", "-t", "accidents", "--api", f"http://127.0.0.1:{free_port()}", "{}"), "publish", "cannot connect")
        one_line_failure(await uipd("publish", "-t", "nope", *api, "[]"), "publish", "404")
        one_line_failure(await uipd("publish", "-t", "cameras", *api, "{not json"), "publish", "not valid JSON")
        await client.aclose()


async def test_tail_prints_published_messages(daemon_factory):
    async with daemon_factory(CONFIG) as d:
        url = f"ws://127.0.0.1:{d.ws_port}/"
        lines: list[str] = []
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(lambda task_status: trio.run_process(
                [UIPD, "tail", url, "--topic", "accidents", "--topic", "cameras", "--token", TOKEN, "--count", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, task_status=task_status))

            async def read() -> None:
                buf = b""
                async for chunk in proc.stdout:
                    buf += chunk
                    *done, buf = buf.split(b"\n")
                    lines.extend(line.decode() for line in done)

            nursery.start_soon(read)
            with trio.fail_after(15):
                while not any("SUBSCRIBED" in line for line in lines):
                    await trio.sleep(0.05)
            async with api_client(d, headers={"authorization": f"Bearer {KEY}"}) as http:
                r = await http.post("/api/publish", json={"topic": "cameras", "data": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "removed": ["z"]})
                assert r.status_code == 200
                r = await http.post("/api/publish", json={"topic": "accidents", "type": "ALERT", "data": {"message": "crash on Le Loi"}})
                assert r.status_code == 200
            with trio.fail_after(15):
                await proc.wait()
        assert proc.returncode == 0
        assert lines[0].split()[1] == "connection"
        assert "SNAPSHOT" in lines[1]
        update = next(line for line in lines if " UPDATE " in line)
        assert update.split()[2:4] == ["cameras", "#1"] and update.endswith("3 entities, 1 removed")
        alert = next(line for line in lines if " ALERT " in line)
        assert alert.split()[2:4] == ["accidents", "#1"] and alert.endswith("crash on Le Loi")

        one_line_failure(await uipd("tail", url, "--token", "wrong"), "tail", "HTTP 401")
        one_line_failure(await uipd("tail", url), "tail", "HTTP 401")
        one_line_failure(await uipd("tail", f"ws://127.0.0.1:{free_port()}/"), "tail", "cannot connect")


async def test_tail_json_and_defaults_from_config(daemon_factory, tmp_path):
    async with daemon_factory() as d:
        config = write_config(tmp_path / "uipd.toml", {"server": {"host": "0.0.0.0", "port": d.ws_port}, "api": {"port": d.api_port}})
        async with trio.open_nursery() as nursery:
            async def publish_soon() -> None:
                async with api_client(d) as http:
                    while not d.hub.sessions:
                        await trio.sleep(0.05)
                    await trio.sleep(0.2)
                    await http.post("/api/publish", json={"topic": "weather", "data": [{"id": "w1", "t": 31}]})

            nursery.start_soon(publish_soon)
            with trio.fail_after(20):
                r = await uipd("tail", "-c", str(config), "--json", "--count", "1")
        assert r.returncode == 0, r.stderr
        messages = [json.loads(line) for line in r.stdout.decode().splitlines()]
        assert [m["type"] for m in messages] == ["connection", "SNAPSHOT", "UPDATE"]
        r = await uipd("stats", "-c", str(config))
        assert r.returncode == 0 and r.stdout.decode().startswith("clients: ")
