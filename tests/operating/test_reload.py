"""SIGHUP reloads the config file with every client kept: welcome text, a source's options, a
new source (and its topic), and an invalid file that leaves the running config in place."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import trio

from tests.operating.support import NotifySocket, Uipd, free_port, metric, parse_metrics, write_config
from tests.wsclient import RawClient


def config_tables(tmp_path: Path, ws: int, api: int, welcome: str, lots_feed: str, extra_sources: dict | None = None) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": ws, "welcome": welcome, "drain_timeout": 2.0},
        "api": {"port": api},
        "sources.lots": {"plugin": "file", "path": str(tmp_path / lots_feed), "poll_interval": 0.1},
        **(extra_sources or {}),
    }


async def reload_and_wait(daemon: Uipd, notify: NotifySocket) -> None:
    daemon.signal(signal.SIGHUP)
    await trio.to_thread.run_sync(notify.wait_for, "RELOADING=1")
    await trio.to_thread.run_sync(notify.wait_for, "READY=1")


async def test_sighup_reload_keeps_clients(tmp_path):
    (tmp_path / "feed1.json").write_text(json.dumps({"parking": [{"id": "p1", "free": 3}]}))
    (tmp_path / "feed2.json").write_text(json.dumps({"parking": [{"id": "p1", "free": 0}, {"id": "p2", "free": 9}]}))
    (tmp_path / "roads.json").write_text(json.dumps({"roadworks": [{"id": "r1", "street": "Le Loi"}]}))
    ws, api = free_port(), free_port()
    path = write_config(tmp_path / "uipd.toml", config_tables(tmp_path, ws, api, "hello v1", "feed1.json"))
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Uipd(path, env={"NOTIFY_SOCKET": notify.address})
    try:
        await trio.to_thread.run_sync(notify.wait_for, "READY=1")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}") as http:
            with trio.fail_after(10):  # READY=1 means listening; the file source loads a moment later
                while (await http.get("/readyz")).status_code != 200:
                    await trio.sleep(0.05)
        old = await RawClient.connect(ws)
        welcome, snapshot = await old.handshake_messages()
        assert welcome["message"] == "hello v1" and welcome["topics"] == ["parking"]
        assert snapshot["data"] == {"parking": [{"id": "p1", "free": 3}]}

        # 1. new welcome, the source's options changed (another file), a new source
        write_config(path, config_tables(tmp_path, ws, api, "hello v2", "feed2.json", {
            "sources.roads": {"plugin": "file", "path": str(tmp_path / "roads.json"), "poll_interval": 0.1},
        }))
        await reload_and_wait(daemon, notify)
        # the old client is still connected (it holds "all"): the restarted source's change and
        # the new source's topic reach it
        seen = {}
        with trio.fail_after(10):
            while {"parking", "roadworks"} - set(seen):
                msg = await old.recv_json()
                if msg["type"] == "UPDATE":
                    seen[msg["topic"]] = msg
        assert {e["id"]: e["free"] for e in seen["parking"]["data"]} == {"p1": 0, "p2": 9}
        assert seen["roadworks"]["data"] == [{"id": "r1", "street": "Le Loi"}]
        await old.send_json({"action": "ping"})
        assert (await old.recv_until(lambda m: m["type"] == "PONG"))["type"] == "PONG"
        new = await RawClient.connect(ws)
        welcome, snapshot = await new.handshake_messages()
        assert welcome["message"] == "hello v2"
        assert welcome["topics"] == ["parking", "roadworks"]
        assert len(snapshot["data"]["parking"]) == 2
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}") as http:
            stats = (await http.get("/api/stats")).json()
            assert set(stats["sources"]) == {"lots", "roads"}
            assert stats["clients"] == 2

            # 2. an invalid file: logged, the running config kept
            path.write_text(path.read_text().replace("hello v2", "hello v3").replace(f"port = {ws}", 'port = "nope"'))
            await reload_and_wait(daemon, notify)
            third = await RawClient.connect(ws)
            welcome, _ = await third.handshake_messages()
            assert welcome["message"] == "hello v2"
            await old.send_json({"action": "ping"})
            await old.recv_until(lambda m: m["type"] == "PONG")

            # 3. a source removed: it stops; its topic stays offered until a restart
            write_config(path, config_tables(tmp_path, ws, api, "hello v4", "feed2.json"))
            await reload_and_wait(daemon, notify)
            stats = (await http.get("/api/stats")).json()
            assert set(stats["sources"]) == {"lots"}
            assert "roadworks" in stats["topics"]
            assert stats["clients"] == 3

            m = parse_metrics((await http.get("/metrics")).text)
            assert metric(m, "uipd_config_reloads_total", result="ok") == 2
            assert metric(m, "uipd_config_reloads_total", result="failed") == 1
            assert metric(m, "uipd_connections_opened_total") == 3
            assert metric(m, "uipd_clients") == 3
        for client in (old, new, third):
            await client.aclose()
    finally:
        code, err = daemon.stop()
        notify.close()
    assert code == 0, err
    assert "reload failed, keeping the running configuration" in err
    assert "server.port: expected an integer" in err
    assert "Traceback" not in err
