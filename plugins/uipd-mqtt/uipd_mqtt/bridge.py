"""paho-mqtt's network loop in a worker thread, bridged to trio.

One :func:`run_session` call is one MQTT connection, from connect to its loss: the blocking
``connect`` and ``loop_forever`` run in a trio worker thread (``trio.to_thread``), paho's callbacks
hop back into trio with ``trio.from_thread``, so every publish happens on the trio thread.
Reconnecting is the caller's loop (with trio sleeps, instantly cancellable); paho's own reconnect is
off.  On cancellation the thread is told to stop (``disconnect()``, which wakes paho's select) and
awaited, never abandoned: it ends within one network-loop turn, or within ``connect_timeout`` when a
TCP connect is in progress.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable
from typing import Any

import trio
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTv5, MQTTv311
from paho.mqtt.reasoncodes import ReasonCode

from uipd_mqtt.options import MqttOptions

log = logging.getLogger(__name__)


class SessionEvents:
    """What a session reports back; each method is called on the trio thread."""

    def subscribed(self, failed_filters: list[str]) -> None: ...

    def message(self, mqtt_topic: str, payload: bytes) -> None: ...

    def refused(self, reason: str) -> None: ...


def make_client(options: MqttOptions) -> Client:
    client_id = options.client_id or f"uipd-{uuid.uuid4().hex[:12]}"
    protocol = MQTTv5 if options.protocol == "5" else MQTTv311
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, reconnect_on_failure=False)
    client.connect_timeout = options.connect_timeout
    if options.username:
        client.username_pw_set(options.username, options.password or None)
    if options.tls:
        client.tls_set(
            ca_certs=options.ca_file or None,
            certfile=options.cert_file or None,
            keyfile=options.key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(options.tls_insecure)
    return client


def _to_trio(token: trio.lowlevel.TrioToken, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn`` on the trio thread and wait for it (back-pressure on paho's loop)."""
    try:
        trio.from_thread.run_sync(fn, *args, trio_token=token)
    except trio.RunFinishedError:  # trio has exited: nothing left to deliver to
        pass


def install_callbacks(client: Client, options: MqttOptions, events: SessionEvents, token: trio.lowlevel.TrioToken) -> None:
    filters = list(dict.fromkeys(r.filter for r in options.routes))

    def on_connect(c: Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            _to_trio(token, events.refused, str(reason))
            return
        # subscribing in on_connect renews the subscriptions on every (re)connection
        c.subscribe([(f, options.qos) for f in filters])

    def on_subscribe(c: Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any) -> None:
        failed = [f for f, r in zip(filters, reasons, strict=False) if r.is_failure]
        _to_trio(token, events.subscribed, failed)

    def on_message(c: Client, userdata: Any, message: MQTTMessage) -> None:
        _to_trio(token, events.message, message.topic, message.payload)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message


def _blocking_session(client: Client, options: MqttOptions, stopping: threading.Event) -> str | None:
    """In the worker thread: connect, then run paho's loop until the connection ends.
    Returns why it could not connect, or None after a connection that ended."""
    try:
        client.connect(options.host, options.port, options.keepalive)
    except (OSError, ValueError) as exc:
        return f"cannot connect to {options.host}:{options.port} ({exc})"
    if stopping.is_set():  # cancelled while connecting: leave at once
        client.disconnect()
    client.loop_forever()
    return None


async def run_session(options: MqttOptions, events: SessionEvents) -> str | None:
    """One connection, with a fresh client, in a worker thread; returns like :func:`_blocking_session`."""
    client = make_client(options)
    install_callbacks(client, options, events, trio.lowlevel.current_trio_token())
    stopping = threading.Event()
    finished = False

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not finished:
                # trio waits for the thread (abandon_on_cancel=False), so end it from here:
                # disconnect() wakes paho's select and makes loop_forever return
                stopping.set()
                client.disconnect()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        result = await trio.to_thread.run_sync(_blocking_session, client, options, stopping, abandon_on_cancel=False)
        finished = True
        nursery.cancel_scope.cancel()
    return result
