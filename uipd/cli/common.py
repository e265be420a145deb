"""What the ``uipd`` subcommands share: exit statuses, the one-line failure, where the daemon is.

Every operator command (tail, publish, stats) exits 0 on success and 1 with one line on stderr
(``uipd CMD: ...``, never a traceback) when it cannot connect, is refused (wrong key or token) or
the server says no; 2 with one line when what it was given is wrong (data that is not JSON).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from attrs import frozen

from uipd.config import ConfigError, load
from uipd.runtime.addresses import reachable

EXIT_CONFIG = 2
"""A wrong config or command line: fix it and try again."""
EXIT_START = 1
"""The config is right but the daemon cannot run here: a port in use, a file it may not read."""
EXIT_INTERRUPTED = 130
"""Stopped at once by a second SIGTERM/SIGINT (or Ctrl-C before the daemon took over signals)."""
EXIT_FAIL = 1
"""An operator command failed: no connection, refused, or the server said no."""

DEFAULT_WS = "ws://127.0.0.1:5000/"
DEFAULT_API = "http://127.0.0.1:5001"
CONFIG_HELP = "take the URLs and API key from this uipd config file"

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure reported as one line, exit status 1."""


class UsageError(CommandError):
    """A wrong argument reported as one line, exit status 2 (like argparse's usage errors)."""


@frozen
class Endpoints:
    ws: str
    """The WebSocket URL of the first configured path."""
    api: str
    """The HTTP API's base URL."""
    key: str
    """The API key ("" when the API needs none)."""


def _host(host: str) -> str:
    """Where to reach a listener bound to ``host`` from this host, as a URL's host part."""
    host = reachable(host)
    return f"[{host}]" if ":" in host else host


def endpoints(config_file: str | None) -> Endpoints:
    """The WebSocket URL, API URL and API key of the daemon a config file describes (or the defaults)."""
    if config_file is None:
        return Endpoints(DEFAULT_WS, DEFAULT_API, "")
    try:
        config = load(config_file)
    except ConfigError as exc:
        raise CommandError(f"config error: {exc}") from None
    s, a = config.server, config.api
    scheme = "wss" if s.tls_cert else "ws"
    return Endpoints(f"{scheme}://{_host(s.host)}:{s.port}{s.paths[0]}", f"http://{_host(a.host)}:{a.port}", a.key)


def reporting(name: str, command: Handler) -> Handler:
    """``command`` as a handler whose :class:`CommandError` is one line on stderr and exit 1 (2
    for a :class:`UsageError`), and whose Ctrl-C is a normal end (tail runs until interrupted)."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return int(command(args) or 0)
        except CommandError as exc:
            print(f"uipd {name}: {exc}", file=sys.stderr)
            return EXIT_CONFIG if isinstance(exc, UsageError) else EXIT_FAIL
        except KeyboardInterrupt:
            return 0

    return handler
