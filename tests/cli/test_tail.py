"""``uipd tail`` against a running daemon: one readable line per message (the entities an UPDATE
carries and removes, an ALERT's severity and message), bounded in width; ``--json``; defaults from
``-c FILE``; one clear line on a wrong port or token."""

from __future__ import annotations

import json
import re
import subprocess

import trio

from tests.cli.support import CONFIG, KEY, TOKEN, one_line_failure, uipd
from tests.client.proxy import CuttableProxy
from tests.client.test_recovery import Publisher
from tests.conftest import api_client
from tests.runtime.support import UIPD, free_port, write_config
from uipd.cli.tail import format_line


LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3}  (connection|SNAPSHOT|SUBSCRIBED|UPDATE|ALERT) ")
WIDTH = 120

# an ALERT as uipd-sim's accidents send it (uipd_sim/accidents.py: the entity, kind and message)
ACCIDENT = {
    "id": "acc-7", "kind": "accident", "severity": "severe", "description": "truck overturned\non Le Loi",
    "message": "Severe accident: truck overturned\non Le Loi", "location": {"lat": 10.77, "lng": 106.7},
}


async def test_tail_lines_name_the_entities_and_the_alert(daemon_factory):
    async with daemon_factory(CONFIG) as d:
        url = f"ws://127.0.0.1:{d.ws_port}/"
        lines: list[str] = []
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(lambda task_status: trio.run_process(
                [UIPD, "tail", url, "--topic", "accidents", "--topic", "cameras", "--token", TOKEN, "--count", "3",
                 "--width", str(WIDTH)],
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
                cameras = [{"id": f"cam-{i}", "status": "ok"} for i in range(8)]
                for body in (
                    {"topic": "cameras", "data": cameras, "removed": ["cam-90", "cam-91"]},
                    {"topic": "accidents", "type": "ALERT", "data": ACCIDENT},
                    {"topic": "accidents", "type": "ALERT", "data": {"code": 7, "detail": "x" * 500}},  # no words: its JSON
                ):
                    assert (await http.post("/api/publish", json=body)).status_code == 200
            with trio.fail_after(15):
                await proc.wait()
        assert proc.returncode == 0
        assert lines[0].split()[1] == "connection"
        assert "SNAPSHOT" in lines[1]
        # one line per message (the newline in the accident's message did not split it), none wider than asked
        assert all(LINE.match(line) and len(line) <= WIDTH for line in lines), lines
        update = next(line for line in lines if " UPDATE " in line)
        assert update.split()[2:4] == ["cameras", "#1"]
        # the first five ids then "+N"; the removed ids get what is left of the width
        assert update.endswith("8 entities: cam-0, cam-1, cam-2, cam-3, cam-4 +3; 2 removed: cam-90 +1")
        accident, other = [line for line in lines if " ALERT " in line]
        assert accident.split()[2:4] == ["accidents", "#1"]
        assert accident.endswith("[severe] acc-7: Severe accident: truck overturned on Le Loi")
        assert other.split()[2:4] == ["accidents", "#2"]
        assert '#2  {"code":7,"detail":"xxx' in other and other.endswith("x…") and len(other) == WIDTH

        one_line_failure(await uipd("tail", url, "--token", "wrong"), "tail", "HTTP 401")
        one_line_failure(await uipd("tail", url), "tail", "HTTP 401")
        one_line_failure(await uipd("tail", f"ws://127.0.0.1:{free_port()}/"), "tail", "cannot connect")


async def test_tail_json_and_defaults_from_config(daemon_factory, tmp_path):
    async with daemon_factory() as d:
        config = write_config(tmp_path / "uipd.toml", {"server": {"host": "0.0.0.0", "port": d.ws_port}, "api": {"port": d.api_port}})
        async with trio.open_nursery() as nursery:
            async def publish_soon() -> None:
                async with api_client(d) as http:
                    # a registered session's queue already holds its connection message and SNAPSHOT
                    while not d.hub.sessions:
                        await trio.sleep(0.05)
                    await http.post("/api/publish", json={"topic": "weather", "data": [{"id": "w1", "t": 31}]})

            nursery.start_soon(publish_soon)
            with trio.fail_after(20):
                r = await uipd("tail", "-c", str(config), "--json", "--count", "1")
        assert r.returncode == 0, r.stderr
        messages = [json.loads(line) for line in r.stdout.decode().splitlines()]
        assert [m["type"] for m in messages] == ["connection", "SNAPSHOT", "UPDATE"]
        r = await uipd("stats", "-c", str(config))
        assert r.returncode == 0 and r.stdout.decode().startswith("clients: ")


def test_tail_lines_fit_any_width():
    # NGSI-LD ids share a long prefix: they are cut at the front, where they do not differ
    urns = [{"id": f"urn:ngsi-ld:AirQualityObserved:district-{i:02}-station"} for i in range(9)]
    update = {"type": "UPDATE", "topic": "airQuality", "seq": 4, "timestamp": "2026-01-02T03:04:05.678Z",
              "data": urns, "removed": ["urn:ngsi-ld:AirQualityObserved:gone"]}
    line = format_line(update, 140)
    assert line.startswith("03:04:05.678  UPDATE     airQuality        #4  9 entities: …")
    assert "district-00-station, …" in line and line.endswith("; 1 removed")  # no room left for the removed id
    assert " +" in line and len(line) <= 140
    # uipd-ngsi-ld's default alert message names the entity already: not twice
    rule = {"id": "urn:x:1", "field": "aqi", "value": 170, "rule": "aqi > 150", "message": "urn:x:1: aqi = 170 (aqi > 150)"}
    assert format_line({"type": "ALERT", "topic": "airQuality", "data": rule}).endswith("  urn:x:1: aqi = 170 (aqi > 150)")
    # a recovery answer says which topics resumed and which may have lost alerts
    answer = {"type": "SNAPSHOT", "data": {"weather": []}, "recovered": ["cameras"], "alertsLost": ["weather"]}
    assert format_line(answer).endswith("weather: 0; recovered: cameras; alerts may be lost: weather")
    messages = [update, {"type": "ALERT", "data": {**ACCIDENT, "message": "x\n" * 300}}, {"type": "ALERT", "data": ["a"] * 300},
                {"type": "SNAPSHOT", "data": {f"topic{i}": [] for i in range(50)}}, "not json\nat all"]
    for width in (40, 80, 200):
        for message in messages:
            line = format_line(message, width)
            assert len(line) <= width and "\n" not in line, (width, line)


async def test_tail_resumes_after_a_dropped_link_and_says_when_alerts_may_be_lost(daemon_factory):
    raw = {"server": {"topics": ["news"]}}
    async with daemon_factory(raw) as first, daemon_factory(raw) as second, trio.open_nursery() as nursery:
        proxy = CuttableProxy(first.ws_port)
        await nursery.start(proxy.run)
        out: list[dict] = []
        err: list[str] = []
        proc = await nursery.start(lambda task_status: trio.run_process(
            [UIPD, "tail", proxy.url(), "--topic", "news", "--json", "--count", "12"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, task_status=task_status))

        async def read(stream, into, parse) -> None:
            buf = b""
            async for chunk in stream:
                buf += chunk
                *done, buf = buf.split(b"\n")
                into.extend(parse(line.decode()) for line in done)

        nursery.start_soon(read, proc.stdout, out, json.loads)
        nursery.start_soon(read, proc.stderr, err, str)

        async def until(check) -> None:
            with trio.fail_after(10):
                while not check():
                    await trio.sleep(0.02)

        def seqs() -> list[int]:
            return [m["seq"] for m in out if m["type"] in ("UPDATE", "ALERT")]

        await until(lambda: any(m["type"] == "SUBSCRIBED" for m in out))
        async with api_client(first) as api:
            pub = Publisher(api)
            await pub.publish(3, topics=("news",))
            await until(lambda: len(seqs()) == 3)
            proxy.cut(stay_down=True)
            await until(lambda: any("link lost" in line for line in err))
            await pub.publish(3, topics=("news",))  # missed while away
            proxy.restore()
            await until(lambda: any("resumed where it was for: news" in line for line in err))
            await pub.publish(3, topics=("news",))
            await until(lambda: len(seqs()) == 9)
        # another daemon behind the same address: a new epoch, what was missed cannot be replayed
        proxy.cut(stay_down=True)
        proxy.target_port = second.ws_port
        proxy.restore()
        await until(lambda: any("alerts may have been missed for: news" in line for line in err))
        async with api_client(second) as api:
            await Publisher(api).publish(3, topics=("news",))
        with trio.fail_after(10):
            await proc.wait()
        assert proc.returncode == 0, err
        assert seqs() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], "nothing missed, nothing twice, then the new run"
        assert [m["data"]["n"] for m in out if m["type"] == "ALERT"] == [3, 6, 9, 3]
        nursery.cancel_scope.cancel()


async def test_tail_offers_compression_unless_no_compress(daemon_factory):
    async with daemon_factory() as d, trio.open_nursery() as nursery:
        url = f"ws://127.0.0.1:{d.ws_port}/"
        outputs: dict[str, bytes] = {}

        async def tail(*flags: str) -> None:
            r = await uipd("tail", url, "--topic", "weather", "--json", "--count", "1", *flags)
            assert r.returncode == 0, r.stderr
            outputs[" ".join(flags)] = r.stdout

        nursery.start_soon(tail)
        nursery.start_soon(tail, "--no-compress")
        with trio.fail_after(20):
            while len(d.hub.sessions) < 2:
                await trio.sleep(0.05)
        async with api_client(d) as http:
            assert (await http.get("/api/stats")).json()["compressedClients"] == 1, "one offered deflate, one did not"
            stations = [{"id": f"w{i}", "district": f"District {i}", "t": 31} for i in range(100)]
            assert (await http.post("/api/publish", json={"topic": "weather", "data": stations})).status_code == 200
        with trio.fail_after(20):
            while len(outputs) < 2:
                await trio.sleep(0.05)
        compressed, plain = ([json.loads(line) for line in outputs[k].decode().splitlines()] for k in ("", "--no-compress"))
        assert [m["type"] for m in compressed] == [m["type"] for m in plain] == ["connection", "SNAPSHOT", "SUBSCRIBED", "UPDATE"]
        assert compressed[-1]["data"] == plain[-1]["data"] == stations
        assert d.flusher.compression.input_bytes > d.flusher.compression.output_bytes > 0


async def test_tail_says_when_tls_fails(daemon_factory, tmp_path):
    from tests.server.test_access import tls_files

    server, _ = tls_files(tmp_path)  # a CA of the test's own: not one the system trusts
    async with daemon_factory({"server": server}) as d:
        one_line_failure(await uipd("tail", f"wss://localhost:{d.ws_port}/"), "tail", "cannot connect", "TLS: unable to get local issuer certificate")
