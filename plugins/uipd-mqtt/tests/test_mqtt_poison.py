"""One bad message, whatever makes it bad, is dropped alone: the session goes on (no reconnect),
the messages after it are published, and a burst is logged once then summarised."""

from __future__ import annotations

import json
import logging

import pytest
from mqtt_support import FakePublisher, TestClient, require_broker, unique_prefix, wait_for

from uipd_mqtt.options import MqttOptions, Route
from uipd_mqtt.plugin import create


@pytest.fixture(autouse=True)
def broker():
    require_broker()


class BrittlePublisher(FakePublisher):
    """Raises what no publisher should for an entity marked ``boom`` (a fault, not a refusal)."""

    def update(self, topic, entities=(), removed=()):
        entities = list(entities)
        if any(e.get("boom") for e in entities):
            raise RuntimeError("publisher fault")
        return super().update(topic, entities, removed)


async def test_a_message_uipd_refuses_or_that_fails_is_dropped_alone(nursery, caplog):
    caplog.set_level(logging.INFO)
    prefix = unique_prefix()
    source = create(MqttOptions(routes=(Route(f"{prefix}/s/+", "sensors", id_level=4),), bad_payload_log_interval=60.0))
    pub = BrittlePublisher(source.topics)
    nursery.start_soon(source.run, pub)
    await wait_for(lambda: source.connected)
    async with TestClient() as client:
        await client.publish(f"{prefix}/s/a", json.dumps({"v": 1}))
        await client.publish(f"{prefix}/s/huge", b'{"v": %d}' % 2**70)  # parses; uipd cannot encode it
        await client.publish(f"{prefix}/s/lone", b'{"v": "\\ud800"}')  # a lone surrogate
        await client.publish(f"{prefix}/s/boom", json.dumps({"boom": True}))  # the publisher raises
        await client.publish(f"{prefix}/s/b", json.dumps({"v": 2}))
        await wait_for(lambda: "b" in pub.state["sensors"])
    assert sorted(pub.state["sensors"]) == ["a", "b"]
    assert source.counts["connections"] == 1 and source.connected  # the same session throughout
    assert source.counts["bad_payload"] == 3 and source.counts["publish_errors"] == 3
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 1 and "refused by uipd" in dropped[0]  # the other two wait for the summary
    nursery.cancel_scope.cancel()
