"""The bundled ``file`` source: serves a JSON file's topics and publishes only the difference on change."""

import json
import logging
import os

import pytest
import trio

from tests.conftest import connect
from uipd.sources.file import read_topics_file

BENCH_SNAPSHOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "bench", "data", "hcmc-snapshot.json")


async def test_file_topics_served_and_changes_published_as_a_diff(daemon_factory, tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"cameras": [{"id": "c1", "s": "on"}, {"id": "c2", "s": "on"}], "accidents": []}))
    async with daemon_factory({"server": {"topics": []}, "sources": {"st": {"plugin": "file", "path": str(path), "poll_interval": 0.05}}}) as d:
        assert d.hub.topics.names == ["cameras", "accidents"]
        with trio.fail_after(3):
            while not d.sources[0].ready:
                await trio.sleep(0.02)
        c = await RawConnect(d)
        path.write_text(json.dumps({"cameras": [{"id": "c1", "s": "off"}, {"id": "c2", "s": "on"}], "accidents": [{"id": "a"}]}, indent=1))
        msgs = [await c.recv_json(), await c.recv_json()]
        by_topic = {m["topic"]: m for m in msgs}
        assert by_topic["cameras"]["data"] == [{"id": "c1", "s": "off"}]  # c2 unchanged: not re-sent
        assert by_topic["accidents"]["data"] == [{"id": "a"}]
        path.write_text(json.dumps({"cameras": [{"id": "c1", "s": "off"}], "accidents": [{"id": "a"}]}))
        gone = await c.recv_json()
        assert gone["topic"] == "cameras" and gone["data"] == [] and gone["removed"] == ["c2"]
        path.write_text("{ broken json")
        await _polls(d, 3)
        assert await c.barrier() == []  # a bad file keeps the last good state
        assert len(d.hub.topics.state_of("cameras")) == 1


async def RawConnect(d):
    return await connect(d)


@pytest.mark.skipif(not os.path.exists(BENCH_SNAPSHOT), reason="../shared/bench/data is not beside this checkout")
async def test_the_city_snapshot_file_is_served_in_full(daemon_factory):
    with open(BENCH_SNAPSHOT, encoding="utf-8") as f:
        expected = json.load(f)
    async with daemon_factory({"server": {"topics": []}, "sources": {"st": {"plugin": "file", "path": BENCH_SNAPSHOT}}}) as d:
        with trio.fail_after(5):
            while not d.sources[0].ready:
                await trio.sleep(0.02)
        from tests.wsclient import RawClient

        c = await RawClient.connect(d.ws_port)
        await c.recv_json()
        snapshot = await c.recv_json(timeout=10)
        assert {t: len(v) for t, v in snapshot["data"].items()} == {t: len({e["id"] for e in v}) for t, v in expected.items()}
        assert snapshot["data"]["cameras"][0] == expected["cameras"][0]


def _write(path, text):
    """Replace the file at once: a poll in the middle of a plain write would read half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _polls(d, n):
    """Wait until the file source has checked its file ``n`` more times."""
    source = d.configured_sources[0].source
    target = source.polls + n
    with trio.fail_after(5):
        while source.polls < target:
            await trio.sleep(0.02)


async def test_one_refused_entity_holds_back_neither_other_topics_nor_other_entities(daemon_factory, tmp_path, caplog):
    """Review r5: the load used to stop at the first refused topic (a applied, c never), re-read the
    file and count the refusal again every poll, and log "keeping the last good state"."""
    caplog.set_level(logging.INFO, logger="uipd")
    path = tmp_path / "state.json"
    path.write_text('{"a": [{"id": 1, "v": 1}], "b": [{"id": 2, "v": "ok"}, {"id": 4}], "c": [{"id": 3, "v": 1}]}')
    async with daemon_factory({"server": {"topics": []}, "sources": {"f": {"plugin": "file", "path": str(path), "poll_interval": 0.02}}}) as d:
        with trio.fail_after(3):
            while not d.sources[0].ready:
                await trio.sleep(0.02)
        c = await connect(d)
        # b's entity 2 becomes NaN, entity 4 changes validly, entity 5 is new and nested too deep to encode
        deep = "[" * 300 + "]" * 300
        _write(path, '{"a": [{"id": 1, "v": 2}], "b": [{"id": 2, "v": NaN}, {"id": 4, "v": 4}, {"id": 5, "v": %s}],'
                        ' "c": [{"id": 3, "v": 9}]}' % deep)
        got = {}
        with trio.fail_after(3):
            while len(got) < 3:
                m = await c.recv_json()
                got[m["topic"]] = m["data"]
        assert got == {"a": [{"id": 1, "v": 2}], "b": [{"id": 4, "v": 4}], "c": [{"id": 3, "v": 9}]}
        assert d.hub.topics.state_of("b")["2"] == {"id": 2, "v": "ok"}  # the refused entity keeps its last good version
        assert "5" not in d.hub.topics.state_of("b")
        await _polls(d, 5)
        assert sum(d.sources[0].publisher.refused.values()) == 1  # read and refused once, not once per poll
        lines = [r.getMessage() for r in caplog.records if r.name == "uipd.sources.file"]
        refused = [line for line in lines if "uipd refuses" in line]
        assert len(refused) == 1, lines
        assert "'b'" in refused[0] and "entity 2" in refused[0] and "entity 5" in refused[0] and "NaN" in refused[0]
        assert not any("keeping the last good state" in line for line in lines)
        assert await c.barrier() == []


async def test_a_file_nested_too_deep_is_a_broken_file_not_a_crash(daemon_factory, tmp_path, caplog):
    """Review r6: json raised RecursionError, which the run loop did not catch: the source crashed."""
    caplog.set_level(logging.INFO, logger="uipd")
    path = tmp_path / "state.json"
    path.write_text('{"a": [{"id": 1}]}')
    async with daemon_factory({"server": {"topics": []}, "sources": {"f": {"plugin": "file", "path": str(path), "poll_interval": 0.02}}}) as d:
        with trio.fail_after(3):
            while not d.sources[0].ready:
                await trio.sleep(0.02)
        _write(path, "[" * 100000)
        await _polls(d, 3)
        assert d.sources[0].errors == 0 and d.sources[0].restarts == 0
        assert any("nested too deep" in r.getMessage() and "keeping the last good state" in r.getMessage() for r in caplog.records)
        assert d.hub.topics.state_of("a") == {"1": {"id": 1}}
    with pytest.raises(ValueError, match="nested too deep"):
        read_topics_file(str(path))
