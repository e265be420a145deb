"""SIGHUP reloads the config file with every client kept: welcome text, a source's options, a
new source (and its topic), and an invalid file that leaves the running config in place."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from attrs import frozen

from tests.runtime.support import NotifySocket, Uipd, free_port, metric, parse_metrics, write_config
from tests.wsclient import RawClient
from uipd.config import load
from uipd.runtime.daemon import Daemon
from uipd.runtime.sources import SourceRunner
from uipd.plugin import SourceType, hookimpl
from uipd.sources.registry import PluginRegistry
from uipd.testing import serving


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


# -- reload faults and details, on a daemon in the test's nursery (the file re-read is real) -----


@frozen
class TagOptions:
    tag: str = ""


class Plugins:
    """An inline source type whose behaviour the test switches: ``make`` replaces what ``create``
    does; its sources take 0.3 s to end when cancelled (a cleanup)."""

    make: Callable[[TagOptions], object] | None = None
    release: trio.Event | None = None
    """Set: a source tagged ``stuck`` ends its shielded cleanup only once this is set."""
    running = 0
    most_running = 0
    events: list[str] = []

    class SlowStop:
        topics = ("slow",)

        def __init__(self, options: TagOptions) -> None:
            self.tag = options.tag

        async def run(self, publisher) -> None:
            Plugins.running += 1
            Plugins.most_running = max(Plugins.most_running, Plugins.running)
            Plugins.events.append(f"start {self.tag}")
            publisher.ready()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):  # e.g. closing a session upstream
                    await trio.sleep(0.3)
                    if self.tag == "stuck" and Plugins.release is not None:  # a cleanup ignoring cancellation
                        await Plugins.release.wait()
                Plugins.running -= 1
                Plugins.events.append(f"end {self.tag}")

    @classmethod
    def create(cls, options: TagOptions) -> object:
        return (cls.make or cls.SlowStop)(options)

    @hookimpl
    def uipd_source_types(self) -> list[SourceType]:
        return [SourceType("slowstop", TagOptions, Plugins.create)]


@asynccontextmanager
async def daemon_on(path: Path) -> AsyncIterator[Daemon]:
    """A daemon loaded from ``path`` (so reload re-reads it) in the test's nursery."""
    Plugins.make, Plugins.running, Plugins.most_running, Plugins.events = None, 0, 0, []
    async with serving(Daemon(load(path), PluginRegistry.discover([("slowstop", Plugins())]))) as daemon:
        yield daemon


def tables(**server: object) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout": 1.0, **server},
        "api": {"port": 0},
        "sources.s": {"plugin": "slowstop", "tag": "one"},
    }


async def still_serving(daemon: Daemon) -> None:
    client = await RawClient.connect(daemon.ws_port)
    hello, _ = await client.handshake_messages()
    assert hello["type"] == "connection"
    await client.send_json({"action": "ping"})
    await client.recv_until(lambda m: m["type"] == "PONG")
    await client.aclose()


def _raise(exc: BaseException) -> object:
    raise exc


class _NoTopics:
    async def run(self, publisher: object) -> None:
        pass


class _StringTopics(_NoTopics):
    topics = "slow"


@pytest.mark.parametrize(
    "make",
    [
        lambda options: _raise(RuntimeError("create failed")),
        lambda options: _raise(KeyError("missing")),
        lambda options: _NoTopics(),
        lambda options: _StringTopics(),
    ],
    ids=["RuntimeError", "KeyError", "no topics", "topics as a string"],
)
async def test_a_plugin_failing_on_reload_fails_only_the_reload(tmp_path, caplog, make):
    path = write_config(tmp_path / "u.toml", tables())
    async with daemon_on(path) as d:
        write_config(path, {**tables(welcome="new"), "sources.s": {"plugin": "slowstop", "tag": "two"}})
        Plugins.make = make
        assert await d.reload() is False
        assert d.reloads == {"failed": 1}
        assert d.config.server.welcome != "new"  # kept whole
        assert [s.name for s in d.sources] == ["s"] and Plugins.events == ["start one"]
        await still_serving(d)
    failures = [r.getMessage() for r in caplog.records if "reload failed, keeping the running configuration" in r.getMessage()]
    assert len(failures) == 1 and "sources.s:" in failures[0]


async def test_a_reload_failing_halfway_through_apply_leaves_the_daemon_serving(tmp_path, caplog, monkeypatch):
    path = write_config(tmp_path / "u.toml", tables())
    async with daemon_on(path) as d:
        start = SourceRunner.start

        async def failing_start(self: SourceRunner, source: object) -> None:
            raise RuntimeError("cannot start on purpose")

        monkeypatch.setattr(SourceRunner, "start", failing_start)
        write_config(path, {**tables(), "sources.s": {"plugin": "slowstop", "tag": "two"}})
        assert await d.reload() is False
        assert d.reloads == {"failed": 1}
        await still_serving(d)
        assert d.configured_sources == []  # the old one stopped, the new one never started: what runs now
        assert any("reload failed while applying" in r.getMessage() and "cannot start on purpose" in r.getMessage() for r in caplog.records)
        monkeypatch.setattr(SourceRunner, "start", start)
        assert await d.reload() is True  # the next reload starts what is missing
        assert [cs.name for cs in d.configured_sources] == ["s"] and Plugins.events[-1] == "start two"


async def test_a_changed_source_is_replaced_only_after_the_old_task_ended(tmp_path):
    path = write_config(tmp_path / "u.toml", tables())
    async with daemon_on(path) as d:
        write_config(path, {**tables(), "sources.s": {"plugin": "slowstop", "tag": "two"}})
        assert await d.reload() is True
        assert Plugins.events == ["start one", "end one", "start two"]
        assert Plugins.most_running == 1


async def test_a_source_that_never_ends_fails_the_reload_without_a_replacement_beside_it(tmp_path, caplog):
    stuck = {**tables(drain_timeout=0.4), "sources.s": {"plugin": "slowstop", "tag": "stuck"}}
    path = write_config(tmp_path / "u.toml", stuck)
    Plugins.release = release = trio.Event()
    async with daemon_on(path) as d:
        try:
            write_config(path, {**tables(drain_timeout=0.4), "sources.s": {"plugin": "slowstop", "tag": "two"}})
            with trio.fail_after(5):  # it waited for the old task forever
                assert await d.reload() is False
            assert d.reloads == {"failed": 1}
            assert Plugins.events == ["start stuck"] and d.configured_sources == [] and d.sources == []
            lines = [r.getMessage() for r in caplog.records if "did not end" in r.getMessage()]
            assert lines == ["source s did not end within 0.4 s of its cancellation (drain_timeout); it is not restarted until it has"]
            await still_serving(d)
            with trio.fail_after(5):
                assert await d.reload() is False  # still running: still no replacement
            assert Plugins.events == ["start stuck"]
            release.set()
            with trio.fail_after(5):
                assert await d.reload() is True  # it ended: the replacement starts
            assert Plugins.events == ["start stuck", "end stuck", "start two"] and Plugins.most_running == 1
            assert [s.name for s in d.sources] == ["s"]
        finally:
            release.set()  # else the daemon's own end would wait for it forever
            Plugins.release = None


async def test_broker_changes_on_reload_are_warned_about(tmp_path, caplog):
    path = write_config(tmp_path / "u.toml", tables())
    async with daemon_on(path) as d:
        write_config(path, {**tables(), "broker": {"prefix": "other", "lease_ttl": 9.0}})
        with caplog.at_level(logging.WARNING, logger="uipd.runtime.reload"):
            assert await d.reload() is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "uipd.runtime.reload"]
    assert warnings == ["reload: broker.prefix, broker.lease_ttl changed: takes effect only after a restart"]


async def test_new_rate_limits_reach_connected_clients(tmp_path):
    path = write_config(tmp_path / "u.toml", tables(rate_limit=100.0, rate_burst=200))
    async with daemon_on(path) as d:
        client = await RawClient.connect(d.ws_port)
        await client.handshake_messages()
        write_config(path, tables(rate_limit=0.5, rate_burst=2, rate_limit_strikes=2))
        assert await d.reload() is True
        for _ in range(4):
            await client.send_json({"action": "ping"})
        replies = [await client.recv_until(lambda m: m["type"] in ("PONG", "ERROR")) for _ in range(4)]
        assert [m["type"] for m in replies] == ["PONG", "PONG", "ERROR", "ERROR"]
        assert replies[2]["error"]["code"] == "rate_limited"
        await client.send_json({"action": "ping"})  # the third strike in a row: closed 1008
        assert await client.expect_close() == 1008
