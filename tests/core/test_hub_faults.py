"""Issue 12 item 1, the core's side of the per-connection boundaries: a connect that raises
leaves nothing behind and wakes nobody (the heartbeat's side: tests/core/test_liveness.py)."""

from __future__ import annotations

import pytest

from tests.core.helpers import at, drain, make_hub, types
from uipd.core.hub import HubSettings
from uipd.core.topics import TopicTable


def test_a_connect_that_raises_registers_nothing_and_wakes_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub()
    woken: list[str] = []

    def unbuildable(*args: object, **kwargs: object) -> bytes:
        raise TypeError("Type is not JSON serializable: set")

    monkeypatch.setattr(TopicTable, "snapshot_frame", unbuildable)
    with pytest.raises(TypeError):
        hub.connect("victim", at(0), lambda: woken.append("victim"))
    assert woken == []  # the shell's connection was never scheduled with a session it does not have
    assert hub.sessions == {} and hub.counters.connections == 0
    monkeypatch.undo()
    other = hub.connect("other", at(1))
    assert types(drain(other)) == ["connection", "SNAPSHOT"]
    assert hub.subscriber_count("cameras") == 1  # no routing entry left for "victim"


def test_a_default_topic_the_table_lacks_leaves_no_routing_entry() -> None:
    hub = make_hub()
    hub.settings = HubSettings(default_topics=("weather", "cameraz"))
    with pytest.raises(KeyError):
        hub.connect("victim", at(0))
    assert hub.sessions == {}
    assert hub.subscriber_count("weather") == 0
