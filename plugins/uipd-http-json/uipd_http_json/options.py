"""The ``[sources.NAME]`` table of a ``plugin = "http-json"`` source."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from uipd.plugin_tools import http_url, not_empty, positive
from uipd_http_json.selector import Selector


def _selector(instance: Any, attribute: Any, value: str) -> None:
    try:
        Selector.parse(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


@frozen
class HttpJsonOptions:
    url: str = field(validator=http_url)
    """The JSON document to poll."""
    topic: str = field(validator=not_empty)
    """The uipd topic the selected entities make up (the whole state of the topic)."""
    selector: str = field(default="$", validator=_selector)
    """Where the entity list is in the document, e.g. ``$.data.items[*]``; ``$`` for a top-level array."""
    id_field: str = field(default="id", validator=not_empty)
    """The entity field holding its id; copied to ``id`` when it is another field."""
    interval: float = field(default=30.0, validator=positive)
    """Seconds between polls (from the start of one to the start of the next)."""
    timeout: float = field(default=10.0, validator=positive)
    """Seconds one request may take, connect to last byte."""
    headers: dict[str, str] = field(factory=dict)
    """Extra request headers, e.g. ``{Authorization = "Bearer ..."}``."""
    conditional: bool = True
    """Send If-None-Match / If-Modified-Since from the last answer, so an unchanged document is a 304."""
    max_bytes: int = field(default=16 * 1024 * 1024, validator=positive)
    """A larger response body is refused (and logged) instead of being parsed."""
    retry_min_backoff: float = field(default=1.0, validator=positive)
    """First wait after a failed poll; it doubles on each further failure."""
    retry_max_backoff: float = field(default=60.0, validator=positive)
    """Longest wait between failed polls."""
