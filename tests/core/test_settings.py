"""Hub settings (uipd.core.settings) and Hub.apply_settings (a config reload): connected clients
get the settings each holds a copy of, and every part of the hub reads the new ones."""

import attrs

from tests.core.helpers import at, drain, make_hub, types


def test_new_rate_limits_and_queue_bound_reach_connected_clients() -> None:
    hub = make_hub(rate_limit=100.0, rate_burst=200, rate_limit_strikes=20, max_queue_bytes=1 << 20)
    s = hub.connect("c1", at(0))
    drain(s)
    hub.apply_settings(attrs.evolve(hub.settings, rate_limit=1.0, rate_burst=2, rate_limit_strikes=1, max_queue_bytes=4096))
    assert s.outbound.max_bytes == 4096
    for _ in range(3):
        hub.receive(s, '{"action":"ping"}', at(1))
    msgs = drain(s)
    # the old bucket held 200 tokens; the new one holds at most 2
    assert types(msgs) == ["PONG", "PONG", "ERROR"] and msgs[2]["error"]["code"] == "rate_limited"
    hub.receive(s, '{"action":"ping"}', at(1))
    assert s.outbound.closing is not None and s.outbound.closing.code == 1008
    later = hub.connect("c2", at(2))
    assert (later.rate.rate, later.rate.burst, later.outbound.max_bytes) == (1.0, 2, 4096)


def test_turning_the_rate_limit_off_reaches_connected_clients() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=1, rate_limit_strikes=5)
    s = hub.connect("c1", at(0))
    drain(s)
    hub.apply_settings(attrs.evolve(hub.settings, rate_limit=0.0))
    for _ in range(10):
        hub.receive(s, '{"action":"ping"}', at(0))
    assert types(drain(s)) == ["PONG"] * 10


def test_assigned_settings_reach_every_part_of_the_hub() -> None:
    # The slow-consumer policy and the subscription limit are read by the router and the
    # dispatcher: assigning hub.settings (what apply_settings does) must reach them too.
    hub = make_hub(max_queue_bytes=200, slow_consumer="resync", max_subscriptions=5)
    s = hub.connect("c1", at(0))
    drain(s)
    hub.settings = attrs.evolve(hub.settings, slow_consumer="disconnect", max_subscriptions=1)
    hub.receive(s, '{"action":"subscribe","topics":["cameras","weather"]}', at(1))
    assert [m["error"]["code"] for m in drain(s)] == ["too_many_subscriptions"]
    hub.reply(s, b"x" * 200)
    hub.reply(s, b"y")
    assert s.outbound.closing is not None and s.outbound.closing.code == 4008
