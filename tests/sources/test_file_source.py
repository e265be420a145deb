"""The bundled ``file`` source: serves a JSON file's topics and publishes only the difference on change."""

import json
import os

import pytest
import trio

from tests.conftest import connect

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
        await trio.sleep(0.1)
        path.write_text(json.dumps({"cameras": [{"id": "c1", "s": "off"}, {"id": "c2", "s": "on"}], "accidents": [{"id": "a"}]}, indent=1))
        msgs = [await c.recv_json(), await c.recv_json()]
        by_topic = {m["topic"]: m for m in msgs}
        assert by_topic["cameras"]["data"] == [{"id": "c1", "s": "off"}]  # c2 unchanged: not re-sent
        assert by_topic["accidents"]["data"] == [{"id": "a"}]
        path.write_text(json.dumps({"cameras": [{"id": "c1", "s": "off"}], "accidents": [{"id": "a"}]}))
        gone = await c.recv_json()
        assert gone["topic"] == "cameras" and gone["data"] == [] and gone["removed"] == ["c2"]
        path.write_text("{ broken json")
        await trio.sleep(0.2)
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
