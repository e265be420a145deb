"""``uipd stats``: the daemon's clients, topics and sources (``GET /api/stats``) as tables."""

from __future__ import annotations

import argparse
import json
from typing import Any

from uipd.cli.common import reporting
from uipd.cli.http import add_api_args, request


def add_stats(sub: Any) -> None:
    s = sub.add_parser("stats", help="print the daemon's clients, topics and sources")
    add_api_args(s)
    s.add_argument("--json", action="store_true", help="print the raw /api/stats JSON")
    s.set_defaults(handler=reporting("stats", cmd_stats))


def cmd_stats(args: argparse.Namespace) -> int:
    stats = request(args, "GET", "/api/stats")
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"clients: {stats.get('clients', 0)}", ""]
    topics = stats.get("topics", {})
    lines += _table(["topic", "subscribers", "entities", "seq"], [[n, t.get("subscribers", 0), t.get("entities", 0), t.get("seq", 0)] for n, t in topics.items()])
    sources = stats.get("sources", {})
    if sources:
        lines.append("")
        yes = lambda v: "yes" if v else "no"  # noqa: E731
        lines += _table(["source", "running", "ready", "restarts", "errors"], [[n, yes(s.get("running")), yes(s.get("ready")), s.get("restarts", 0), s.get("errors", 0)] for n, s in sources.items()])
    return "\n".join(lines)
