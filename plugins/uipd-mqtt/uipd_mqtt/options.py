"""The ``[sources.NAME]`` table of a ``plugin = "mqtt"`` source.

```toml
[sources.sensors]
plugin = "mqtt"
host = "127.0.0.1"

[[sources.sensors.routes]]
filter = "sensors/+/aq"      # MQTT topic filter
topic = "airQuality"         # uipd topic
id_level = 2                 # the id is the 2nd level of the MQTT topic (sensors/<id>/aq)
```
"""

from __future__ import annotations

from typing import Any, Literal

from attrs import field, frozen

from uipd.plugin_tools import not_empty, positive


def _qos(instance: Any, attribute: Any, value: int) -> None:
    if value not in (0, 1, 2):
        raise ValueError(f"{attribute.name} must be 0, 1 or 2, got {value!r}")


def _port(instance: Any, attribute: Any, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a port number 1-65535, got {value!r}")


@frozen
class Route:
    """``[[sources.NAME.routes]]``: messages of one MQTT topic filter become entities of one uipd topic."""

    filter: str = field(validator=not_empty)
    """An MQTT topic filter (``+`` one level, ``#`` the rest)."""
    topic: str = field(validator=not_empty)
    id_field: str = ""
    """The payload field holding the entity id."""
    id_level: int = 0
    """Or: the 1-based level of the MQTT topic holding the id (``sensors/+/aq``: 2)."""
    id_prefix: str = ""
    """Prepended to the id, e.g. ``"urn:ngsi-ld:AirQualityObserved:"``."""

    def check(self, where: str) -> None:
        if bool(self.id_field) == bool(self.id_level):
            raise ValueError(f"{where}: set exactly one of id_field (a payload field) or id_level (an MQTT topic level)")
        if self.id_level < 0:
            raise ValueError(f"{where}.id_level: must be 1 or more, got {self.id_level}")


@frozen
class MqttOptions:
    routes: tuple[Route, ...]
    host: str = "127.0.0.1"
    port: int = field(default=1883, validator=_port)
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str = ""
    """Empty: ``uipd-`` and a random suffix.  Two clients with one id knock each other off."""
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""
    """CA bundle to verify the broker with; empty: the system's."""
    cert_file: str = ""
    """Client certificate (with ``key_file``) for brokers that require one."""
    key_file: str = ""
    tls_insecure: bool = False
    """Skip the broker hostname check (tests, self-signed labs only)."""
    qos: int = field(default=1, validator=_qos)
    keepalive: int = field(default=30, validator=positive)
    """Seconds between MQTT pings when idle; a dead broker is noticed within 1.5 times this."""
    connect_timeout: float = field(default=5.0, validator=positive)
    """Seconds a TCP/TLS connect may take; also the longest a shutdown waits for one in progress."""
    reconnect_min_delay: float = field(default=0.5, validator=positive)
    reconnect_max_delay: float = field(default=30.0, validator=positive)
    max_payload_bytes: int = field(default=1024 * 1024, validator=positive)
    """A larger payload is counted as bad and dropped."""
    bad_payload_log_interval: float = field(default=60.0, validator=positive)
    """Bad payloads are all counted; after one is logged, the next are summed up at most this often."""

    def check(self) -> None:
        if not self.routes:
            raise ValueError("routes: at least one [[routes]] table (filter, topic, id_field or id_level) is required")
        for i, route in enumerate(self.routes):
            route.check(f"routes[{i}]")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError(f"reconnect_max_delay ({self.reconnect_max_delay}) must be at least reconnect_min_delay ({self.reconnect_min_delay})")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file: set both or neither")
        if (self.ca_file or self.cert_file or self.tls_insecure) and not self.tls:
            raise ValueError("tls: must be true when ca_file, cert_file or tls_insecure is set")
