"""A source's refused publishes: logged once in full, then summarised per interval (never one line
per publish, never losing the count), counted per source in /api/stats and in
``uipd_publishes_refused_total``; the API's refusals are the caller's 400 and not logged."""

from __future__ import annotations

import logging
import re
from typing import Any

import trio

from tests.conftest import api_client, running_daemon
from tests.runtime.support import metric, parse_metrics
from tests.sources.test_supervision import inline_plugin
from uipd.plugin_tools import RepeatLog

SUMMARY = re.compile(r"^source rogue: (\d+) more publishes refused in the last \d+ s; last: publish to '(\w+)' refused: ")


def counted(lines: list[str]) -> int:
    """How many refusals the lines account for: a full line is one, a summary says how many."""
    return sum(int(m.group(1)) if (m := SUMMARY.match(line)) else 1 for line in lines)


def test_repeat_log_logs_the_first_in_full_then_one_summary_per_interval(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="t")
    clock = [0.0]
    log = RepeatLog("source x", logging.getLogger("t"), 10.0, events="publishes refused", level=logging.ERROR, clock=lambda: clock[0])
    for i in range(573):  # a burst within the first second
        clock[0] = i / 1000
        log.report(f"bad {i}")
    log.flush()  # the interval is not over: nothing yet
    assert [r.getMessage() for r in caplog.records] == ["source x: bad 0"] and caplog.records[0].levelno == logging.ERROR
    clock[0] = 10.5
    log.flush()
    assert caplog.records[-1].getMessage() == "source x: 572 more publishes refused in the last 10 s; last: bad 572"
    log.flush()  # nothing pending: no line
    clock[0] = 12.0
    log.report("lone")  # within the interval of the summary: counted, not logged
    assert len(caplog.records) == 2 and log.pending == 1
    clock[0] = 21.0
    log.report("after")  # the interval is over: both pending are summed up
    assert caplog.records[-1].getMessage() == "source x: 2 more publishes refused in the last 10 s; last: after"
    clock[0] = 40.0
    log.report("quiet for long")  # a new episode: in full again
    assert caplog.records[-1].getMessage() == "source x: quiet for long"
    assert log.total == 576 and log.pending == 0 and len(caplog.records) == 4


async def test_a_source_refused_many_times_a_second_is_summarised_counted_and_keeps_running(caplog: Any) -> None:
    attempts = 0
    done = trio.Event()

    class Garbage:
        topics = ("poison",)

        async def run(self, publisher: Any) -> None:
            nonlocal attempts
            with trio.move_on_after(0.5):  # garbage as fast as it can for half a second
                while True:
                    for call in (lambda: publisher.update("poison", [{"id": "x", "v": {1, 2}}]), lambda: publisher.alert("elsewhere", {})):
                        attempts += 1
                        try:
                            call()
                        except ValueError:
                            pass
                    await trio.sleep(0)
            publisher.update("poison", [{"id": "good"}])
            done.set()
            await trio.sleep_forever()

    caplog.set_level(logging.DEBUG, logger="uipd.sources.publisher")
    config = {"server": {"topics": ["poison", "elsewhere"]}, "log": {"repeat_interval": 0.2}, "sources": {"rogue": {"plugin": "garbage"}}}
    async with running_daemon(config, plugins=(inline_plugin("garbage", Garbage),)) as daemon, api_client(daemon) as http:
        with trio.fail_after(5):
            await done.wait()
        # the API's own refusal: a 400 for the caller, not a log line nor a source's count
        r = await http.post("/api/publish", json={"topic": "poison", "data": [{"id": 1.5}]})
        assert r.status_code == 400
        with trio.fail_after(5):  # the daemon's periodic flush logs the end of the burst
            while counted([r.getMessage() for r in caplog.records if r.name == "uipd.sources.publisher"]) < attempts:
                await trio.sleep(0.02)
        stats = (await http.get("/api/stats")).json()
        m = parse_metrics((await http.get("/metrics")).text)
    assert attempts > 1000
    assert stats["sources"]["rogue"] == {**stats["sources"]["rogue"], "refused": attempts, "errors": 0, "restarts": 0, "running": True}
    assert stats["topics"]["poison"]["entities"] == 1  # the good publish went through
    assert metric(m, "uipd_publishes_refused_total", source="rogue", reason="bad_request") == attempts // 2
    assert metric(m, "uipd_publishes_refused_total", source="rogue", reason="forbidden_topic") == attempts // 2
    lines = [r for r in caplog.records if r.name == "uipd.sources.publisher"]
    messages = [r.getMessage() for r in lines]
    assert messages[0].startswith("source rogue: publish to 'poison' refused: entity 0 (id 'x') cannot be encoded")
    assert all(r.levelno == logging.ERROR for r in lines)
    assert len(lines) <= 2 + 0.5 / 0.2 + 1  # the first, then one per interval (and the tail): not one per publish
    assert counted(messages) == attempts  # every refusal is in some line's count
