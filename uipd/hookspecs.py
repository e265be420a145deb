"""The plugin contract of uipd: the hook marker and the hook specifications, nothing else.

A plugin is a module registered under the ``uipd.sources`` entry-point group; it implements
the hooks below with ``@uipd.plugin.hookimpl``.  Hooks are synchronous: a plugin's long-running
work is a :class:`uipd.plugin.Source` object that the daemon runs as a task in its own nursery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from uipd.plugin import SourceType

hookspec = pluggy.HookspecMarker("uipd")

# ---------------------------------------------------------------------------------------------
# Discovery: called once at startup and by ``uipd plugins``.
# ---------------------------------------------------------------------------------------------


@hookspec
def uipd_source_types() -> list[SourceType]:  # type: ignore[empty-body]
    """Return the source types this plugin provides.

    Each :class:`~uipd.plugin.SourceType` names itself (the value of ``plugin = "..."`` in a
    ``[sources.NAME]`` table; by convention the plugin's entry-point name), gives the attrs
    class its options are loaded into (strictly: unknown keys and wrong types are config
    errors naming the key), and a ``create(options)`` factory for a :class:`~uipd.plugin.Source`.

    Called once per process, before any source runs.  Must not do I/O that can block for long.
    """
