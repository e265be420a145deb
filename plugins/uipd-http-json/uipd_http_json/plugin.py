"""The uipd hook: the ``http-json`` source type."""

from __future__ import annotations

from uipd.plugin import SourceType, hookimpl
from uipd_http_json.options import HttpJsonOptions
from uipd_http_json.source import HttpJsonSource


def create(options: HttpJsonOptions) -> HttpJsonSource:
    if options.retry_max_backoff < options.retry_min_backoff:
        raise ValueError(
            f"retry_max_backoff ({options.retry_max_backoff}) must be at least retry_min_backoff ({options.retry_min_backoff})"
        )
    return HttpJsonSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("http-json", HttpJsonOptions, create, "entities from any JSON URL, polled with conditional GETs")]
