"""Test helpers for the mqtt plugin (module name unique across plugins): a fake Publisher and a
paho client that publishes to the real Mosquitto on 127.0.0.1:1883 from the test."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import trio
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5

from uipd.testing import FakePublisher as BasePublisher

BROKER = ("127.0.0.1", 1883)


def require_broker() -> None:
    try:
        socket.create_connection(BROKER, timeout=1).close()
    except OSError:
        pytest.fail("Mosquitto is not answering on 127.0.0.1:1883 (.ci/run starts it: ensure_mosquitto)")


def unique_prefix() -> str:
    """A topic prefix of this test alone, so tests (and retained messages) never meet."""
    return f"uipd-test/{uuid.uuid4().hex[:10]}"


class FakePublisher(BasePublisher):
    """uipd.testing.FakePublisher, failing the test on the calls the mqtt source must never make."""

    def alert(self, topic: str, data: Any) -> int:
        raise AssertionError("the mqtt source sends no alerts")

    def replace(self, topic: str, entities: Iterable[Mapping[str, Any]]) -> int | None:
        raise AssertionError("the mqtt source never replaces a whole topic")


class TestClient:
    """A paho client in its own network thread (loop_start), driven from trio through to_thread."""

    __test__ = False

    def __init__(self, client_id: str = "", protocol: int = MQTTv5) -> None:
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}", protocol=protocol)

    async def __aenter__(self) -> TestClient:
        def connect() -> None:
            self.client.connect(*BROKER)
            self.client.loop_start()

        await trio.to_thread.run_sync(connect)
        return self

    async def __aexit__(self, *exc: object) -> None:
        def stop() -> None:
            self.client.disconnect()
            self.client.loop_stop()

        await trio.to_thread.run_sync(stop)

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        await trio.to_thread.run_sync(info.wait_for_publish, 5)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
