"""The mqtt source against the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from mqtt_support import FakePublisher, TestClient, require_broker, unique_prefix, wait_for
from paho.mqtt.client import MQTTv5, MQTTv311

from uipd_mqtt.options import MqttOptions, Route
from uipd_mqtt.plugin import create


@pytest.fixture(autouse=True)
def broker():
    require_broker()


def make(prefix, **kw):
    routes = (
        Route(f"{prefix}/sensors/+/aq", "airQuality", id_level=4),
        Route(f"{prefix}/cams/#", "cameras", id_field="cameraNum", id_prefix="urn:ngsi-ld:Camera:"),
    )
    return create(MqttOptions(routes=routes, reconnect_min_delay=0.05, reconnect_max_delay=0.2, **kw))


@pytest.mark.parametrize(("protocol", "paho_protocol"), [("5", MQTTv5), ("3.1.1", MQTTv311)])
async def test_messages_become_entities_with_ids_from_level_or_payload(nursery, protocol, paho_protocol):
    prefix = unique_prefix()
    source = make(prefix, protocol=protocol)
    pub = FakePublisher(source.topics)
    nursery.start_soon(source.run, pub)
    await wait_for(lambda: source.connected)
    assert pub.is_ready
    async with TestClient(protocol=paho_protocol) as client:
        await client.publish(f"{prefix}/sensors/q1/aq", json.dumps({"aqi": 81, "pm25": 20.5}))
        await client.publish(f"{prefix}/cams/district1/x", json.dumps({"cameraNum": "TTH 406", "status": "online"}))
        await wait_for(lambda: len(pub.updates) == 2)
        await client.publish(f"{prefix}/sensors/q1/aq", b"")  # cleared: removed
        await wait_for(lambda: len(pub.updates) == 3)
    assert pub.updates[0] == ("airQuality", [{"aqi": 81, "pm25": 20.5, "id": "q1"}], [])
    assert pub.updates[1] == ("cameras", [{"cameraNum": "TTH 406", "status": "online", "id": "urn:ngsi-ld:Camera:TTH 406"}], [])
    assert pub.updates[2] == ("airQuality", [], ["q1"])
    assert source.counts["messages"] == 3 and source.counts["published"] == 2 and source.counts["removed"] == 1
    nursery.cancel_scope.cancel()


async def test_retained_values_arrive_on_subscribe(nursery):
    prefix = unique_prefix()
    async with TestClient() as client:
        await client.publish(f"{prefix}/sensors/q9/aq", json.dumps({"aqi": 50}), retain=True)
        source = make(prefix)
        pub = FakePublisher(source.topics)
        nursery.start_soon(source.run, pub)
        await wait_for(lambda: "q9" in pub.state["airQuality"])
        await client.publish(f"{prefix}/sensors/q9/aq", b"", retain=True)  # clean up the broker
    nursery.cancel_scope.cancel()


async def test_bad_payloads_are_logged_counted_and_not_fatal(nursery, caplog):
    prefix = unique_prefix()
    source = make(prefix, bad_payload_log_interval=60.0)
    pub = FakePublisher(source.topics)
    nursery.start_soon(source.run, pub)
    await wait_for(lambda: source.connected)
    async with TestClient() as client:
        await client.publish(f"{prefix}/sensors/q1/aq", b"{not json")
        await client.publish(f"{prefix}/cams/a", json.dumps({"no": "id"}))
        await client.publish(f"{prefix}/sensors/q2/aq", b"[1]")
        await client.publish(f"{prefix}/sensors/q3/aq", json.dumps({"aqi": 10}))
        await wait_for(lambda: len(pub.updates) == 1)
    assert source.counts["bad_payload"] == 3 and source.connected
    assert set(pub.state["airQuality"]) == {"q3"}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not JSON" in warnings[0]  # the rest are summed up later, not spammed
    nursery.cancel_scope.cancel()


async def test_reconnects_and_resubscribes_after_the_connection_drops(nursery, caplog):
    caplog.set_level(logging.INFO)
    prefix = unique_prefix()
    client_id = f"uipd-test-{prefix[-10:]}"
    source = make(prefix, client_id=client_id)
    pub = FakePublisher(source.topics)
    nursery.start_soon(source.run, pub)
    await wait_for(lambda: source.connected)
    # a second client with the same id makes the broker drop the source's connection
    async with TestClient(client_id=client_id):
        await wait_for(lambda: source.counts["connections"] >= 2, timeout=10)
    async with TestClient() as client:
        await client.publish(f"{prefix}/sensors/after/aq", json.dumps({"aqi": 1}))
        await wait_for(lambda: "after" in pub.state["airQuality"])
    assert any("reconnecting with backoff" in r.getMessage() for r in caplog.records)
    nursery.cancel_scope.cancel()


async def test_unreachable_broker_is_retried_and_cancellation_is_quick(caplog):
    # a port nothing listens on: every attempt fails at once
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = make(unique_prefix(), port=port)
    pub = FakePublisher(source.topics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, pub)
        await trio.sleep(0.6)
        assert not pub.is_ready and not source.connected
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot connect" in warnings[0]  # once per state, not per attempt


async def test_cancellation_stops_the_network_thread_quickly(nursery):
    prefix = unique_prefix()
    source = make(prefix)
    pub = FakePublisher(source.topics)
    done = trio.Event()

    async def run():
        with trio.CancelScope() as scope:
            cancel_scope.append(scope)
            await source.run(pub)
        done.set()

    cancel_scope: list[trio.CancelScope] = []
    nursery.start_soon(run)
    await wait_for(lambda: source.connected)
    start = trio.current_time()
    cancel_scope[0].cancel()
    with trio.fail_after(2):
        await done.wait()
    assert trio.current_time() - start < 1.0  # paho's loop turn is 1 s; disconnect() wakes it at once
    assert not source.connected
