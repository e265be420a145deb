"""The ``[sources.NAME]`` table of a ``plugin = "ngsi-ld"`` source, loaded strictly by uipd.

```toml
[sources.ctx]
plugin = "ngsi-ld"
base_url = "http://broker:1026"
context = "https://example.org/hcmc-context.jsonld"

[[sources.ctx.entities]]
type = "Camera"
topic = "cameras"
fields = { name = "cameraName" }          # uipd field = NGSI-LD attribute

[[sources.ctx.entities]]
type = "AirQualityObserved"
topic = "airQuality"
alerts = [{ field = "aqi", op = ">", value = 150 }]
```
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import field, frozen

from uipd.plugin_tools import http_url, not_empty, optional_http_url, positive

Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in"]
_ORDERING = {">", ">=", "<", "<="}


def _rule_value(instance: AlertRule, attribute: Any, value: Any) -> None:
    # ``value`` is loaded as any TOML value, so its shape is checked against ``op`` here
    if instance.op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ValueError(f"value must be an array for op {instance.op!r}, got {value!r}")
    elif instance.op in _ORDERING:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"value must be a number or a string for op {instance.op!r}, got {value!r}")
    elif isinstance(value, (list, dict)):
        raise ValueError(f"value must be a single value for op {instance.op!r}, got {value!r}")


@frozen
class AlertRule:
    """``{field = "aqi", op = ">", value = 150}``: an ALERT when an entity newly matches."""

    # attrs.field spelled out: the attribute ``field`` shadows the name inside this class body
    field: str = attrs.field(validator=not_empty)
    """A field of the uipd entity (after the field mapping)."""
    op: Op
    value: Any = attrs.field(validator=_rule_value)
    """A number or string for ``> >= < <=``; an array for ``in``/``not_in``; a single value for ``== !=``."""
    message: str = ""
    """The ALERT's ``message``; default ``"<field> <op> <value>"``."""

    def describe(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


@frozen
class EntityMapping:
    """``[[sources.NAME.entities]]``: one NGSI-LD entity type served as one uipd topic."""

    type: str = field(validator=not_empty)
    """The NGSI-LD entity type (a term of ``context``, or a full IRI)."""
    topic: str = field(validator=not_empty)
    fields: dict[str, str] = field(factory=dict)
    """uipd field = NGSI-LD attribute, e.g. ``{name = "cameraName"}``; a mapped attribute is renamed
    (list it twice to keep both names)."""
    keep_unmapped: bool = True
    """Copy the attributes not in ``fields`` (and the NGSI-LD ``type``) under their own names."""
    timestamp_field: str = ""
    """An attribute that changes with every change of the entity (e.g. ``dateObserved``), used for
    change detection when the broker gives no ``modifiedAt``; empty: a hash of the entity."""
    alerts: tuple[AlertRule, ...] = ()


@frozen
class NgsiLdOptions:
    base_url: str = field(validator=[not_empty, http_url])
    """The broker, e.g. ``http://orion:1026`` (``/ngsi-ld/v1/...`` is appended)."""
    entities: tuple[EntityMapping, ...]
    format: Literal["keyValues", "normalized"] = "keyValues"
    """The representation asked of the broker (for polls and notifications)."""
    context: str = field(default="", validator=optional_http_url)
    """JSON-LD @context URL sent in the ``Link`` header; empty: the core context."""
    tenant: str = ""
    """Sent as ``NGSILD-Tenant`` when set."""
    token: str = ""
    """Sent as ``Authorization: Bearer <token>`` when set."""
    interval: float = field(default=10.0, validator=positive)
    """Seconds between polls (start to start); in push mode polling still runs, as a safety net
    that also sees deletions, so set it longer there."""
    timeout: float = field(default=10.0, validator=positive)
    """Seconds one request to the broker may take."""
    page_size: int = field(default=100, validator=positive)
    """Entities per request (``limit``); brokers cap it (Orion-LD at 1000)."""
    max_entities: int = field(default=100_000, validator=positive)
    """Per type: a listing longer than this is refused (guards against a broker that pages forever)."""
    sys_attrs: bool = True
    """Ask for ``modifiedAt`` (``options=sysAttrs``) to detect changes without comparing contents."""
    retry_min_backoff: float = field(default=1.0, validator=positive)
    retry_max_backoff: float = field(default=60.0, validator=positive)
    push: bool = False
    """Register an NGSI-LD subscription whose notifications go to ``notify_url``."""
    notify_url: str = field(default="", validator=optional_http_url)
    """Where the broker reaches this source: ``http://UIPD-HOST:API-PORT/sources/NAME/notify``."""
    notify_headers: dict[str, str] = field(factory=dict)
    """Headers the broker sends with each notification (``receiverInfo``), e.g.
    ``{Authorization = "Bearer <[api] key>"}`` when the API has a key."""

    def check(self) -> None:
        """Cross-field checks; raise ValueError naming the key."""
        if not self.entities:
            raise ValueError("entities: at least one [[entities]] table (type, topic) is required")
        topics = [m.topic for m in self.entities]
        types = [m.type for m in self.entities]
        for label, values in (("topic", topics), ("type", types)):
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"entities: each {label} may appear once, repeated: {', '.join(dup)}")
        if self.push and not self.notify_url:
            raise ValueError("notify_url: required when push = true (http://UIPD-HOST:API-PORT/sources/NAME/notify)")
        if self.retry_max_backoff < self.retry_min_backoff:
            raise ValueError(f"retry_max_backoff ({self.retry_max_backoff}) must be at least retry_min_backoff ({self.retry_min_backoff})")
