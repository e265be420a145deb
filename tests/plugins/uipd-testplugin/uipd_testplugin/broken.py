"""A plugin that fails to import when UIPD_TESTPLUGIN_BROKEN=1 (the discovery tests set it)."""

import os

if os.environ.get("UIPD_TESTPLUGIN_BROKEN") == "1":
    raise ImportError("uipd_testplugin.broken fails to import on purpose")

from uipd.plugin import SourceType, hookimpl  # noqa: E402


@hookimpl
def uipd_source_types() -> list[SourceType]:
    return []
