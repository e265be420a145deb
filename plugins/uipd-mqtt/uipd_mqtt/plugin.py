"""The uipd hook: the ``mqtt`` source type."""

from __future__ import annotations

from uipd.plugin import SourceType, hookimpl
from uipd_mqtt.options import MqttOptions
from uipd_mqtt.source import MqttSource


def create(options: MqttOptions) -> MqttSource:
    options.check()
    return MqttSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("mqtt", MqttOptions, create, "entities from JSON payloads of MQTT topics (3.1.1 and 5)")]
