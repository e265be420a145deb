"""``uipd tail``: connect, subscribe, and print every message readably, one line each."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError, open_websocket_url

from uipd.ops.commands import CommandError, endpoints

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""A city SNAPSHOT is over a megabyte (trio-websocket's default limit is 1 MiB)."""
CONNECT_TIMEOUT = 10.0


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary(message: dict[str, Any]) -> str:
    """What a message says, in a few words."""
    kind = message.get("type")
    data = message.get("data")
    if kind == "UPDATE":
        entities = data if isinstance(data, list) else []
        parts = [_plural(len(entities), "entity").replace("entitys", "entities")]
        removed = message.get("removed") or []
        if removed:
            parts.append(f"{len(removed)} removed")
        return ", ".join(parts)
    if kind == "ALERT":
        if isinstance(data, dict):
            for key in ("message", "text", "description", "title"):
                if isinstance(data.get(key), str):
                    return _short(data[key])
        return _short(data)
    if kind == "SNAPSHOT":
        sections = data if isinstance(data, dict) else {}
        text = ", ".join(f"{t}: {len(v) if isinstance(v, list) else '?'}" for t, v in sections.items()) or "no topics"
        return text + (" (resync)" if message.get("resync") else "")
    if kind == "connection":
        return f"{message.get('message', '')!r}, client {message.get('clientId', '?')}, topics: {', '.join(message.get('topics', []))}"
    if kind == "SUBSCRIBED":
        return "now: " + ", ".join(message.get("topics", []))
    if kind == "ERROR":
        error = message.get("error", {})
        return f"{error.get('code', '?')}: {error.get('message', '')}"
    return _short({k: v for k, v in message.items() if k not in ("type", "timestamp")})


def format_line(message: Any) -> str:
    """``time type topic #seq summary``; the time is the message's own (UTC, HH:MM:SS.mmm)."""
    if not isinstance(message, dict):
        return _short(message, 200)
    ts = message.get("timestamp")
    clock = ts[11:23] if isinstance(ts, str) and len(ts) >= 23 else "--:--:--.---"
    seq = message.get("seq")
    return f"{clock}  {str(message.get('type', '?')):<10} {str(message.get('topic') or '-'):<12} {('#' + str(seq)) if seq is not None else '':>7}  {summary(message)}"


async def tail(url: str, topics: list[str], *, raw: bool, token: str = "", count: int = 0, out: IO[str] = sys.stdout) -> int:
    headers = [("Authorization", f"Bearer {token}")] if token else None
    seen = 0
    try:
        async with open_websocket_url(url, extra_headers=headers, max_message_size=MAX_MESSAGE_BYTES, connect_timeout=CONNECT_TIMEOUT) as ws:
            if topics:
                await ws.send_message(json.dumps({"action": "subscribe", "topics": topics}))
            while True:
                text = await ws.get_message()
                try:
                    message = json.loads(text)
                except (TypeError, ValueError):
                    message = text
                print(text if raw else format_line(message), file=out, flush=True)
                if count and isinstance(message, dict) and message.get("type") in ("UPDATE", "ALERT"):
                    seen += 1
                    if seen >= count:
                        return 0
    except ConnectionClosed as exc:
        reason = exc.reason
        code = getattr(reason, "code", None)
        if code in (1000, 1001):
            print(f"uipd tail: the server closed the connection ({code} {getattr(reason, 'reason', '') or ''})".rstrip(), file=sys.stderr)
            return 0
        raise CommandError(f"connection closed: {code} {getattr(reason, 'reason', '') or ''}".rstrip()) from None


def _os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than trio's "all attempts to connect ... failed"."""
    for inner in (exc.__cause__, exc.__context__, *getattr(exc.__cause__, "exceptions", ()), *getattr(exc.__context__, "exceptions", ())):
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
    return exc.strerror or str(exc)


def _explain(exc: BaseException, url: str) -> str | None:
    if isinstance(exc, ConnectionRejected):
        hint = " (a token is needed: --token or $UIPD_TOKEN)" if exc.status_code == 401 else ""
        return f"{url} refused the connection: HTTP {exc.status_code}{hint}"
    if isinstance(exc, ConnectionTimeout):
        return f"{url}: no handshake within {CONNECT_TIMEOUT:.0f} s"
    if isinstance(exc, OSError):
        return f"cannot connect to {url}: {_os_reason(exc)}"
    if isinstance(exc, HandshakeError):
        cause = exc.__cause__
        if isinstance(cause, OSError):  # trio-websocket wraps a failed connect
            return f"cannot connect to {url}: {_os_reason(cause)}"
        return f"{url}: the WebSocket handshake failed{f' ({cause})' if cause else ''}"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _explain(inner, url)
            if found:
                return found
    return None


def cmd_tail(args: argparse.Namespace) -> int:
    url = args.url or endpoints(args.config).ws
    if not url.startswith(("ws://", "wss://")):
        raise CommandError(f"{url}: not a ws:// or wss:// URL")
    try:
        return trio.run(lambda: tail(url, args.topics, raw=args.json, token=args.token, count=args.count))
    except CommandError:
        raise
    except (Exception, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
            return 0
        explained = _explain(exc, url)
        if explained is None:
            raise CommandError(f"{url}: {exc!r}") from None
        raise CommandError(explained) from None
