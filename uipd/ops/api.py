"""``uipd publish`` and ``uipd stats``: the HTTP API from a terminal (httpx)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from uipd.ops.commands import CommandError, endpoints

TIMEOUT = 10.0


def _client(args: argparse.Namespace) -> tuple[httpx.Client, str]:
    ep = endpoints(args.config)
    base = (args.api or ep.api).rstrip("/")
    key = args.key if args.key is not None else ep.key
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT), base


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    client, base = _client(args)
    url = base + path
    try:
        with client:
            response = client.request(method, path, json=body)
    except httpx.ConnectError as exc:
        raise CommandError(f"cannot connect to {base}: {_reason(exc)}") from None
    except httpx.TimeoutException:
        raise CommandError(f"{url}: no answer within {TIMEOUT:.0f} s") from None
    except httpx.HTTPError as exc:
        raise CommandError(f"{url}: {exc}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code == 401:
        raise CommandError(f"{url}: 401 unauthorized: missing or wrong API key (--key, $UIPD_API_KEY or [api] key in -c FILE)")
    if response.status_code >= 400:
        error = payload.get("error", {}) if isinstance(payload, dict) else {}
        message = error.get("message") or response.text.strip()[:200] or response.reason_phrase
        raise CommandError(f"{url}: {response.status_code} {error.get('code', '')}: {message}".replace("  ", " "))
    if payload is None:
        raise CommandError(f"{url}: the answer is not JSON (is this a uipd API?)")
    return payload


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(exc).__name__


def _read_data(spec: str) -> Any:
    try:
        if spec == "-":
            text = sys.stdin.read()
        elif spec.startswith("@"):
            text = Path(spec[1:]).read_text(encoding="utf-8")
        else:
            text = spec
    except OSError as exc:
        raise CommandError(f"cannot read {spec[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"the data is not valid JSON: {exc}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    data = _read_data(args.data)
    body: dict[str, Any] = {"topic": args.topic, "type": "ALERT" if args.alert else "UPDATE", "data": data}
    if args.removed:
        if args.alert:
            raise CommandError("--removed goes with an UPDATE, not an ALERT")
        body["removed"] = args.removed
    result = _request(args, "POST", "/api/broadcast" if args.broadcast else "/api/publish", body)
    seq = f"seq {result['seq']}, " if result.get("seq") is not None else ""
    print(f"published {body['type']} to {args.topic}: {seq}{result.get('recipients', 0)} recipient(s)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _request(args, "GET", "/api/stats")
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(format_stats(stats))
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
