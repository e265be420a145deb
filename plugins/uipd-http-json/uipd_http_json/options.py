"""The ``[sources.NAME]`` table of a ``plugin = "http-json"`` source."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from uipd_http_json.selector import Selector


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


def _http_url(instance: Any, attribute: Any, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def _selector(instance: Any, attribute: Any, value: str) -> None:
    try:
        Selector.parse(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def _not_empty(instance: Any, attribute: Any, value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


@frozen
class HttpJsonOptions:
    url: str = field(validator=_http_url)
    """The JSON document to poll."""
    topic: str = field(validator=_not_empty)
    """The uipd topic the selected entities make up (the whole state of the topic)."""
    selector: str = field(default="$", validator=_selector)
    """Where the entity list is in the document, e.g. ``$.data.items[*]``; ``$`` for a top-level array."""
    id_field: str = field(default="id", validator=_not_empty)
    """The entity field holding its id; copied to ``id`` when it is another field."""
    interval: float = field(default=30.0, validator=_positive)
    """Seconds between polls (from the start of one to the start of the next)."""
    timeout: float = field(default=10.0, validator=_positive)
    """Seconds one request may take, connect to last byte."""
    headers: dict[str, str] = field(factory=dict)
    """Extra request headers, e.g. ``{Authorization = "Bearer ..."}``."""
    conditional: bool = True
    """Send If-None-Match / If-Modified-Since from the last answer, so an unchanged document is a 304."""
    max_bytes: int = field(default=16 * 1024 * 1024, validator=_positive)
    """A larger response body is refused (and logged) instead of being parsed."""
    retry_min_backoff: float = field(default=1.0, validator=_positive)
    """First wait after a failed poll; it doubles on each further failure."""
    retry_max_backoff: float = field(default=60.0, validator=_positive)
    """Longest wait between failed polls."""
