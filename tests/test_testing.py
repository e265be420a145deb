"""uipd.testing.FakePublisher is the daemon's publisher on a real hub: a plugin's unit test sees
what the daemon does with its data (validation, encoding, copies, refusals), and records it."""

from __future__ import annotations

import pytest

from uipd.testing import FakePublisher


def test_the_fake_publisher_refuses_counts_and_logs_as_the_daemon_does(caplog):
    pub = FakePublisher(["t"], source="demo")
    with pytest.raises(ValueError, match="this source does not provide topic 'other'"):  # the daemon's words
        pub.update("other", [{"id": 1}])
    with pytest.raises(ValueError, match="NaN"):
        pub.update("t", [{"id": 1, "v": float("nan")}])
    with pytest.raises(ValueError):
        pub.alert("t", {"big": 2**70})  # parses in Python, JSON clients cannot hold it
    assert pub.publisher.refused == {"forbidden_topic": 1, "bad_request": 2}
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "uipd.sources.publisher"] == ["source demo"]
    assert pub.updates == [] and pub.alerts == [] and pub.seq == 0 and pub.state == {"t": {}}


def test_the_fake_publisher_records_the_hubs_copies_and_the_hubs_seq():
    pub = FakePublisher(["a", "b"])
    entity = {"id": 7, "tags": ["x"]}
    assert pub.update("a", [entity]) == 1
    entity["tags"].append("changed after publishing")
    assert pub.state["a"] == {"7": {"id": 7, "tags": ["x"]}}, "the hub keeps its own copy"
    assert pub.updates == [("a", [{"id": 7, "tags": ["x"]}], [])]
    assert pub.replace("a", [entity]) == 2, "the mutated entity differs from the hub's copy: published"
    assert pub.replace("a", [entity]) is None
    assert pub.alert("b", {"message": "m"}) == 1, "each topic has its own seq, as in the daemon"
    assert pub.seq == 1 and pub.alerts == [("b", {"message": "m"})]
    assert pub.hub.topics.get("a").seq == 2 and pub.hub.topics.state_of("a") == pub.state["a"]
    with pytest.raises(TypeError):
        pub.current("a")["8"] = {"id": 8}  # read-only, like the daemon's
    assert not pub.is_ready
    pub.ready()
    assert pub.is_ready and pub.ready_after == {"a"} and pub.publisher.ready_flag
