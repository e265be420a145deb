"""The ``uipd`` command (``uipd = "uipd.cli:main"``); one module per subcommand group:
:mod:`~uipd.cli.run` (run, check-config, plugins), :mod:`~uipd.cli.tail`, :mod:`~uipd.cli.publish`,
:mod:`~uipd.cli.stats`, and the HTTP API client the last two share, :mod:`~uipd.cli.http`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from uipd.cli import hangups


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``uipd`` command.  ``uipd run`` defers SIGHUP before anything else, imports included:
    see :mod:`uipd.cli.hangups`."""
    if list(sys.argv[1:] if argv is None else argv)[:1] == ["run"]:
        hangups.defer()
    from uipd.cli.command import main as command

    return command(argv)


__all__ = ["main"]
