from __future__ import annotations

from tests.core.helpers import TOPICS
from uipd.core.subscriptions import ALL, SubscriptionSet


def default() -> SubscriptionSet:
    return SubscriptionSet({ALL})


def test_default_all_receives_every_topic_in_server_order() -> None:
    subs = default()
    assert subs.wants_all
    assert subs.effective(TOPICS) == TOPICS
    assert not subs.explicit


def test_first_subscribe_replaces_default_then_adds() -> None:
    subs = default()
    subs.subscribe(["cameras"])
    assert subs.names == {"cameras"}
    assert subs.explicit
    assert not subs.wants_all
    subs.subscribe(["accidents"])
    assert subs.names == {"cameras", "accidents"}
    subs.subscribe(["cameras"])
    assert subs.names == {"cameras", "accidents"}


def test_first_subscribe_replaces_a_concrete_default() -> None:
    subs = SubscriptionSet({"weather", "cameras"})
    subs.subscribe(["accidents"])
    assert subs.names == {"accidents"}


def test_effective_keeps_server_order() -> None:
    subs = default()
    subs.subscribe(["congestion", "cameras", "weather"])
    assert subs.effective(TOPICS) == ["cameras", "weather", "congestion"]


def test_subscribe_all_after_concrete() -> None:
    subs = default()
    subs.subscribe(["cameras"])
    subs.subscribe([ALL])
    assert subs.wants_all
    assert subs.effective(TOPICS) == TOPICS


def test_unsubscribe_concrete_while_holding_all_expands() -> None:
    subs = default()
    subs.unsubscribe(["weather"], TOPICS)
    assert not subs.wants_all
    assert subs.names == set(TOPICS) - {"weather"}
    assert subs.effective(TOPICS) == [t for t in TOPICS if t != "weather"]


def test_unsubscribe_several_while_holding_all() -> None:
    subs = default()
    subs.unsubscribe(["weather", "cameras"], TOPICS)
    assert subs.names == set(TOPICS) - {"weather", "cameras"}


def test_unsubscribe_all_explicitly_held_with_others() -> None:
    subs = default()
    subs.subscribe([ALL, "cameras"])
    subs.unsubscribe([ALL], TOPICS)
    assert subs.names == {"cameras"}
    assert subs.effective(TOPICS) == ["cameras"]


def test_unsubscribe_all_from_default_leaves_nothing() -> None:
    subs = default()
    subs.unsubscribe([ALL], TOPICS)
    assert subs.names == set()
    assert subs.effective(TOPICS) == []


def test_unsubscribe_topic_not_held_changes_nothing() -> None:
    subs = default()
    subs.subscribe(["cameras"])
    subs.unsubscribe(["weather"], TOPICS)
    assert subs.names == {"cameras"}


def test_unsubscribe_concrete_and_all_in_one_request_removes_both_in_any_order() -> None:
    for names in (["weather", ALL], [ALL, "weather"]):
        subs = default()
        subs.unsubscribe(names, TOPICS)
        assert subs.names == set()


def test_subscribe_after_unsubscribe_adds_back() -> None:
    subs = default()
    subs.unsubscribe(["weather"], TOPICS)
    subs.subscribe(["weather"])
    assert subs.effective(TOPICS) == TOPICS
