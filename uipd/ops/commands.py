"""Argument parsing for the operator commands and their defaults (from ``-c FILE`` if given).

Every command exits 0 on success and 1 with one line on stderr (``uipd CMD: ...``, never a
traceback) when it cannot connect, is refused (wrong key or token) or the server says no.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from attrs import frozen

from uipd.config import ConfigError, load

DEFAULT_WS = "ws://127.0.0.1:5000/"
DEFAULT_API = "http://127.0.0.1:5001"
EXIT_FAIL = 1


class CommandError(Exception):
    """A failure reported as one line, exit status 1."""


@frozen
class Endpoints:
    ws: str
    api: str
    key: str


def _host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
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


def _run(name: str, fn: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        import sys

        try:
            return int(fn(args) or 0)
        except CommandError as exc:
            print(f"uipd {name}: {exc}", file=sys.stderr)
            return EXIT_FAIL
        except KeyboardInterrupt:
            return 0

    return handler


def add_commands(sub: Any) -> None:
    from uipd.ops import api, tail

    config_help = "take the URLs and API key from this uipd config file"
    t = sub.add_parser("tail", help="connect to a uipd WebSocket and print its messages, one line each")
    t.add_argument("url", nargs="?", help=f"WebSocket URL (default: from -c, else {DEFAULT_WS})")
    t.add_argument("--topic", "-t", dest="topics", action="append", default=[], metavar="T", help="subscribe to T (repeatable; default: the server's default set)")
    t.add_argument("--json", action="store_true", help="print the raw JSON messages")
    t.add_argument("--token", default=os.environ.get("UIPD_TOKEN", ""), help="access token for the handshake (default: $UIPD_TOKEN)")
    t.add_argument("-c", "--config", help=config_help)
    t.add_argument("--count", "-n", type=int, default=0, help="exit after this many UPDATE/ALERT messages (0: run until interrupted)")
    t.set_defaults(handler=_run("tail", tail.cmd_tail))

    p = sub.add_parser("publish", help="publish an UPDATE (or an ALERT) through the HTTP API")
    p.add_argument("data", help="the JSON data, @FILE to read it from a file, or - for stdin")
    p.add_argument("--topic", "-t", required=True)
    p.add_argument("--alert", action="store_true", help="publish an ALERT (default: an UPDATE)")
    p.add_argument("--removed", action="append", default=[], metavar="ID", help="(UPDATE) an entity id to remove (repeatable)")
    p.add_argument("--broadcast", action="store_true", help="send to every client, whatever it subscribed to")
    _api_args(p, config_help)
    p.set_defaults(handler=_run("publish", api.cmd_publish))

    s = sub.add_parser("stats", help="print the daemon's clients, topics and sources")
    _api_args(s, config_help)
    s.add_argument("--json", action="store_true", help="print the raw /api/stats JSON")
    s.set_defaults(handler=_run("stats", api.cmd_stats))


def _api_args(p: argparse.ArgumentParser, config_help: str) -> None:
    p.add_argument("--api", help=f"HTTP API URL (default: from -c, else {DEFAULT_API})")
    p.add_argument("--key", default=os.environ.get("UIPD_API_KEY"), help="API key (default: $UIPD_API_KEY, else from -c)")
    p.add_argument("-c", "--config", help=config_help)
