"""Sessions and the subscription index (uipd.core.sessions)."""

from __future__ import annotations

import pytest

from tests.core.helpers import at, connected, drain, make_hub, send, subscribed_to, update
from uipd.core import publish
from uipd.core.outbound import OutboundQueue
from uipd.core.ratelimit import TokenBucket
from uipd.core.sessions import Session, SubscriptionIndex
from uipd.core.subscriptions import ALL, SubscriptionSet


def test_session_holding_all_and_a_topic_gets_one_copy() -> None:
    hub = make_hub()
    s = subscribed_to(hub, "c1", ["cameras", "all"])
    assert hub.publish(update("cameras", {"id": 1}), at(2)).recipients == 1
    assert len(drain(s)) == 1
    send(hub, s, {"action": "unsubscribe", "topics": ["all"]})
    assert hub.publish(update("weather", {"id": 1}), at(3)).recipients == 0
    assert hub.publish(update("cameras", {"id": 2}), at(3)).recipients == 1
    assert len(drain(s)) == 1


def test_disconnect_removes_from_routing() -> None:
    hub = make_hub()
    a, b = connected(hub, "a"), subscribed_to(hub, "b", ["cameras"])
    hub.disconnect(b)
    hub.disconnect(a)
    assert hub.sessions == {}
    assert hub.publish(update("cameras", {"id": 1}), at(1)).recipients == 0
    assert hub.publish(publish.alert(None, 1, broadcast=True), at(1)).recipients == 0
    assert drain(a) == drain(b) == []



def _session(client_id: str, names: set[str]) -> Session:
    return Session(client_id, SubscriptionSet(names), OutboundQueue(1000), TokenBucket.start(0.0, 1.0, None, 0.0), 0.0, 0.0)


def test_index_holds_an_all_subscriber_once_and_others_per_topic() -> None:
    index = SubscriptionIndex.of(["cameras", "weather"])
    everything, cams = _session("a", {ALL}), _session("c", {"cameras", "weather"})
    index.add(everything)
    index.add(cams)
    assert index.all_topics == {everything} and index.by_topic == {"cameras": {cams}, "weather": {cams}}
    assert index.count("cameras") == 2 and index.subscribed("weather") == {everything, cams}
    index.remove(cams)
    index.remove(cams)  # idempotent
    assert index.by_topic == {"cameras": set(), "weather": set()} and index.count("weather") == 1


def test_index_refuses_an_unknown_topic_and_remove_undoes_a_half_add() -> None:
    index = SubscriptionIndex.of(["cameras"])
    index.add_topic("weather")
    index.add_topic("weather")  # a topic added twice keeps its subscribers
    s = _session("s", {"cameras", "weather", "nope"})
    with pytest.raises(KeyError):
        index.add(s)
    index.remove(s)
    assert all(not subscribers for subscribers in index.by_topic.values())
