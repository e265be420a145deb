from __future__ import annotations

import json

from tests.core.helpers import TOPICS, text_json
from uipd.core.topics import TopicState, TopicTable


def test_table_of_keeps_order_and_membership() -> None:
    table = TopicTable.of(TOPICS)
    assert table.names == TOPICS
    assert "cameras" in table
    assert "all" not in table
    assert table.get("nope") is None
    assert table.get("weather").name == "weather"
    assert all(s.seq == 0 and not s.entities for s in table.topics.values())


def test_state_upsert_replace_and_remove() -> None:
    state = TopicState("cameras")
    state.apply([("1", {"id": 1, "a": 1}), ("2", {"id": "2", "b": 2})], [])
    state.apply([("1", {"id": 1, "c": 3})], [])
    # Whole-entity replace, first-seen order kept.
    assert list(state.entities) == ["1", "2"]
    assert state.entities["1"] == {"id": 1, "c": 3}
    state.apply([], ["2", "missing"])
    assert list(state.entities) == ["1"]


def test_section_encoded_once_per_change() -> None:
    state = TopicState("cameras")
    empty = state.section()
    assert empty == b"[]"
    state.apply([("1", {"id": "1"})], [])
    first = state.section()
    assert json.loads(first) == [{"id": "1"}]
    assert state.section() is first
    state.apply([("2", {"id": "2"})], [])
    second = state.section()
    assert second is not first
    assert json.loads(second) == [{"id": "1"}, {"id": "2"}]


def test_table_apply_bumps_version() -> None:
    table = TopicTable.of(TOPICS)
    assert table.version == 0
    table.apply("cameras", [("1", {"id": "1"})], [])
    table.apply("weather", [], ["x"])
    assert table.version == 2
    assert dict(table.state_of("cameras")) == {"1": {"id": "1"}}


def test_snapshot_frame_content_in_requested_order() -> None:
    table = TopicTable.of(TOPICS)
    table.apply("weather", [("w", {"id": "w", "t": 30})], [])
    msg = text_json(table.snapshot_frame(["cameras", "weather"], 0.0, "T0"))
    epochs = {n: table.topics[n].epoch for n in ("cameras", "weather")}
    assert msg == {
        "type": "SNAPSHOT",
        "data": {"cameras": [], "weather": [{"id": "w", "t": 30}]},
        "positions": {n: {"seq": 0, "epoch": e} for n, e in epochs.items()},
        "timestamp": "T0",
    }


def test_snapshot_frame_cached_while_unchanged_and_young() -> None:
    table = TopicTable.of(TOPICS)
    table.snapshot_max_age = 1.0
    a = table.snapshot_frame(TOPICS, 10.0, "T10")
    assert table.snapshot_frame(TOPICS, 10.5, "T10.5") is a
    assert table.snapshot_frame(TOPICS, 11.0, "T11") is a
    # Too old: rebuilt with the fresh timestamp.
    b = table.snapshot_frame(TOPICS, 11.01, "T11.01")
    assert b is not a
    assert text_json(b)["timestamp"] == "T11.01"


def test_snapshot_frame_rebuilt_after_state_change() -> None:
    table = TopicTable.of(TOPICS)
    a = table.snapshot_frame(TOPICS, 0.0, "T")
    table.apply("accidents", [("1", {"id": "1"})], [])
    b = table.snapshot_frame(TOPICS, 0.0, "T")
    assert b is not a
    assert text_json(b)["data"]["accidents"] == [{"id": "1"}]
    assert table.snapshot_frame(TOPICS, 0.0, "T") is b


def test_snapshot_cache_keyed_by_topic_set_and_resync() -> None:
    table = TopicTable.of(TOPICS)
    full = table.snapshot_frame(TOPICS, 0.0, "T")
    cams = table.snapshot_frame(["cameras"], 0.0, "T")
    resync = table.snapshot_frame(TOPICS, 0.0, "T", resync=True)
    assert cams is not full and resync is not full
    assert list(text_json(cams)["data"]) == ["cameras"]
    assert "resync" not in text_json(full)
    assert text_json(resync)["resync"] is True
    assert table.snapshot_frame(["cameras"], 0.0, "T") is cams
    assert table.snapshot_frame(TOPICS, 0.0, "T", resync=True) is resync


def test_snapshot_cache_is_bounded() -> None:
    table = TopicTable.of(TOPICS)
    table.max_cached_sets = 2
    a = table.snapshot_frame(["cameras"], 0.0, "T")
    b = table.snapshot_frame(["weather"], 0.0, "T")
    c = table.snapshot_frame(["accidents"], 0.0, "T")  # evicts the oldest, a
    assert table.snapshot_frame(["accidents"], 0.0, "T") is c
    assert table.snapshot_frame(["weather"], 0.0, "T") is b
    assert table.snapshot_frame(["cameras"], 0.0, "T") is not a
