"""The operator's commands: ``uipd tail``, ``uipd publish``, ``uipd stats``."""

from uipd.ops.commands import add_commands

__all__ = ["add_commands"]
