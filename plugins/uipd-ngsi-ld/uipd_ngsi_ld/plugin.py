"""The uipd hook: the ``ngsi-ld`` source type."""

from __future__ import annotations

from uipd.plugin import SourceType, hookimpl
from uipd_ngsi_ld.options import NgsiLdOptions
from uipd_ngsi_ld.source import NgsiLdSource


def create(options: NgsiLdOptions) -> NgsiLdSource:
    options.check()
    return NgsiLdSource(options)


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return [SourceType("ngsi-ld", NgsiLdOptions, create, "entities of an NGSI-LD context broker: polled with paging, or pushed")]
