"""The ``uipd`` command line: the parser, usage errors as one line, the dispatch to a subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from uipd import __version__
from uipd.cli.common import EXIT_CONFIG
from uipd.cli.publish import add_publish
from uipd.cli.run import add_run_commands
from uipd.cli.stats import add_stats
from uipd.cli.tail import add_tail


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit 2) instead of the usage text and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="uipd", description="Real-time pub/sub WebSocket daemon for city data.")
    p.add_argument("--version", action="version", version=f"uipd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_run_commands, add_tail, add_publish, add_stats):
        add(sub)  # each sets ``handler``: the function that runs it and returns the exit status
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.handler(args))
