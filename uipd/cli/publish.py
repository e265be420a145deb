"""``uipd publish``: an UPDATE or an ALERT through the HTTP API, from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from uipd.cli.common import CommandError, UsageError, reporting
from uipd.cli.http import add_api_args, request
from uipd.plugin_tools import parse_json


def add_publish(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish an UPDATE (or an ALERT) through the HTTP API")
    p.add_argument("data", help="the JSON data, @FILE to read it from a file, or - for stdin")
    p.add_argument("--topic", "-t", required=True)
    p.add_argument("--alert", action="store_true", help="publish an ALERT (default: an UPDATE)")
    p.add_argument("--removed", action="append", default=[], metavar="ID", help="(UPDATE) an entity id to remove (repeatable)")
    p.add_argument("--broadcast", action="store_true", help="send to every client, whatever it subscribed to")
    add_api_args(p)
    p.set_defaults(handler=reporting("publish", cmd_publish))


def _read_data(spec: str) -> Any:
    """The data argument as JSON; what uipd cannot take (not UTF-8, not JSON, NaN, Infinity,
    nested past the decoder) is a usage error here (exit 2), not an exception in the HTTP client."""
    try:
        if spec == "-":
            data = sys.stdin.buffer.read()
        elif spec.startswith("@"):
            data = Path(spec[1:]).read_bytes()
        else:
            data = spec.encode("utf-8", "surrogateescape")  # undecodable argv bytes come back as they were
    except OSError as exc:
        raise UsageError(f"cannot read {spec[1:]}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the data is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return parse_json(text)
    except ValueError as exc:
        raise UsageError(f"the data is not valid JSON: {exc}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    data = _read_data(args.data)
    body: dict[str, Any] = {"topic": args.topic, "type": "ALERT" if args.alert else "UPDATE", "data": data}
    if args.removed:
        if args.alert:
            raise CommandError("--removed goes with an UPDATE, not an ALERT")
        body["removed"] = args.removed
    result = request(args, "POST", "/api/broadcast" if args.broadcast else "/api/publish", body)
    seq = f"seq {result['seq']}, " if result.get("seq") is not None else ""
    print(f"published {body['type']} to {args.topic}: {seq}{result.get('recipients', 0)} recipient(s)")
    return 0
