"""HubCounters (uipd.core.counters): what each publish and close adds, and the counts of
dropped UPDATEs kept when their clients go."""

from __future__ import annotations

from tests.core.helpers import at, big, connected, drain, make_hub, subscribed_to, update
from uipd.core.counters import HubCounters
from uipd.core.outbound import CloseRequest


def test_count_publish_adds_bytes_per_recipient_and_the_slow_events_it_caused() -> None:
    c = HubCounters()
    c.resyncs, c.slow_disconnects = 2, 1
    c.count_publish("cameras", "UPDATE", False, frame_bytes=100, recipients=3, slow_before=(1, 1))
    c.count_publish(None, "ALERT", True, frame_bytes=10, recipients=2, slow_before=(2, 0))
    assert c.published_by == {("cameras", "UPDATE", False): 1, ("", "ALERT", True): 1}
    assert c.delivered_bytes == 320
    assert c.slow_by_topic == {("cameras", "resync"): 1, ("", "disconnect"): 1}


def test_count_close_takes_the_first_known_code_else_1006() -> None:
    c = HubCounters()
    c.count_close(None, CloseRequest(4008, "slow consumer", False))
    c.count_close(CloseRequest(1001, "going away", True), CloseRequest(1000, "", False))
    c.count_close(None, None)
    assert c.closes == {4008: 1, 1001: 1, 1006: 1}


def test_dropped_updates_of_a_client_that_went_are_kept() -> None:
    hub = make_hub(max_queue_bytes=2000)
    slow = subscribed_to(hub, "slow", ["cameras"])
    other = connected(hub, "other")
    for i in range(20):
        hub.publish(update("cameras", big(i)), at(1))
        drain(other)  # a reader: nothing dropped for it
    dropped = slow.outbound.dropped_updates
    assert dropped > 0 and hub.dropped_updates() == dropped
    hub.disconnect(slow)
    hub.disconnect(slow)  # twice (the shell's paths may cross): counted once
    assert hub.counters.dropped_updates == dropped and hub.dropped_updates() == dropped
