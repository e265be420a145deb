"""``uipd tail``: connect, subscribe, and print every message readably, one line each.

A line says what an operator needs without ``--json``: which entities an UPDATE carries and
removes (the first few ids, then "+N"), an ALERT's severity, entity and message.  Lines never
wrap or split: control characters become spaces and every line is cut to the width.

A dropped link is resumed where it was (``uipd.client``: positions, and ``topics`` + ``since`` on
the reconnect, PROTOCOL.md section 8): the messages missed meanwhile are printed as if nothing
happened, and a line on stderr says when alerts may have been missed (a restarted daemon).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import sys
from typing import IO, Any

import trio

from uipd.cli.common import CONFIG_HELP, DEFAULT_WS, CommandError, endpoints, reporting
from uipd.client import Backoff, Event, Refused, Unreachable, open_client, reconnect_backoff
from uipd.client.link import HandshakeFailed, HandshakeTimeout, Rejected

CONNECT_TIMEOUT = 10.0
WIDTH = 160
"""The line width when stdout is not a terminal (a terminal's own width is used otherwise)."""
MIN_WIDTH = 40
"""Below this not even the time, type and topic fit."""
MAX_IDS = 5
"""Ids shown per UPDATE list before "+N": enough to recognise the entities, few enough to read."""
ID_WIDTH = 32
"""An id longer than this is cut (NGSI-LD URNs are long): the others still fit on the line."""
ALERT_MESSAGE_KEYS = ("message", "text", "description", "title")
"""Where a source puts an ALERT's words (uipd-sim, uipd-ngsi-ld and uipd-example: ``message``)."""
ALERT_SEVERITY_KEYS = ("severity", "level")
"""An ALERT's severity: ``severity`` of a simulated accident, ``level`` of an AQI alert."""


def add_tail(sub: Any) -> None:
    t = sub.add_parser("tail", help="connect to a uipd WebSocket and print its messages, one line each")
    t.add_argument("url", nargs="?", help=f"WebSocket URL (default: from -c, else {DEFAULT_WS})")
    t.add_argument("--topic", "-t", dest="topics", action="append", default=[], metavar="T", help="subscribe to T (repeatable; default: the server's default set)")
    t.add_argument("--json", action="store_true", help="print the raw JSON messages")
    t.add_argument("--token", default=os.environ.get("UIPD_TOKEN", ""), help="access token for the handshake (default: $UIPD_TOKEN)")
    t.add_argument("-c", "--config", help=CONFIG_HELP)
    t.add_argument("--count", "-n", type=int, default=0, help="exit after this many UPDATE/ALERT messages (0: run until interrupted)")
    t.add_argument("--no-compress", dest="compress", action="store_false",
                   help="do not offer permessage-deflate (by default frames arrive compressed when the daemon agrees)")
    t.add_argument("--width", "-w", type=_width, help=f"cut lines to this many characters (default: the terminal's width, else {WIDTH})")
    t.set_defaults(handler=reporting("tail", cmd_tail))


def _width(text: str) -> int:
    value = int(text)
    if value < MIN_WIDTH:
        raise argparse.ArgumentTypeError(f"at least {MIN_WIDTH}, got {value}")
    return value


def _one_line(text: str) -> str:
    """Control characters as spaces: an ALERT's message may hold newlines, one line per message."""
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


def _clip(text: str, limit: int) -> str:
    """``text`` on one line of at most ``limit`` characters."""
    text = _one_line(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _id(ident: Any) -> str:
    """An id in at most :data:`ID_WIDTH` characters, cut at the front: what tells ids apart is
    at their end (``urn:ngsi-ld:Camera:cam-0042``)."""
    text = _one_line(_compact(ident))
    return text if len(text) <= ID_WIDTH else "…" + text[-(ID_WIDTH - 1):]


def _ids(ids: list[Any], room: int) -> str:
    """The first ids (at most :data:`MAX_IDS`) that fit in ``room``, then "+N" for the others;
    "" when not even one fits."""
    shown: list[str] = []
    for ident in ids[:MAX_IDS]:
        candidate = [*shown, _id(ident)]
        rest = len(ids) - len(candidate)
        if len(", ".join(candidate)) + (len(f" +{rest}") if rest else 0) > room:
            break
        shown = candidate
    rest = len(ids) - len(shown)
    return ", ".join(shown) + (f" +{rest}" if rest and shown else "")


def _listing(head: str, ids: list[Any], room: int) -> str:
    """``head: a, b +N``, or ``head`` alone when no id fits in ``room``."""
    listed = _ids(ids, room - len(head) - 2)
    return f"{head}: {listed}" if listed else head


def _update(message: dict[str, Any], room: int) -> str:
    """``12 entities: a, b, c, d, e +7; 1 removed: z``: the entities' ids come first, the
    removed count is always there, its ids when they fit."""
    data = message.get("data")
    entities = data if isinstance(data, list) else []
    removed = message.get("removed")
    removed = removed if isinstance(removed, list) else []
    removed_head = f"{len(removed)} removed"
    parts = []
    if entities or not removed:
        head = f"{len(entities)} entit{'y' if len(entities) == 1 else 'ies'}"
        ids = [e.get("id", "?") if isinstance(e, dict) else "?" for e in entities]
        parts.append(_listing(head, ids, room - (len(removed_head) + 2 if removed else 0)))
    if removed:
        parts.append(_listing(removed_head, removed, room - sum(len(p) + 2 for p in parts)))
    return "; ".join(parts)


def _alert(data: Any, room: int) -> str:
    """``[severe] acc-7: Severe accident: ...`` when the data says so, else its JSON, cut."""
    if isinstance(data, dict):
        text = next((data[k] for k in ALERT_MESSAGE_KEYS if isinstance(data.get(k), str)), None)
        if text is not None:
            severity = next((data[k] for k in ALERT_SEVERITY_KEYS if isinstance(data.get(k), str)), None)
            ident = data.get("id")
            prefix = f"[{_clip(severity, ID_WIDTH)}] " if severity else ""
            if isinstance(ident, str) and ident not in text:  # NGSI-LD's default message names it
                prefix += f"{_id(ident)}: "
            return prefix + _clip(text, room - len(prefix))
    return _clip(_compact(data), room)


def summary(message: dict[str, Any], room: int = WIDTH) -> str:
    """What a message says, in at most ``room`` characters."""
    kind = message.get("type")
    data = message.get("data")
    if kind == "UPDATE":
        text = _update(message, room)
    elif kind == "ALERT":
        text = _alert(data, room)
    elif kind == "SNAPSHOT":
        sections = data if isinstance(data, dict) else {}
        text = ", ".join(f"{t}: {len(v) if isinstance(v, list) else '?'}" for t, v in sections.items()) or "no topics"
        text += " (resync)" if message.get("resync") else ""
        for key, label in (("recovered", "recovered"), ("alertsLost", "alerts may be lost")):  # a recovery answer
            if isinstance(message.get(key), list) and message[key]:
                text += f"; {label}: " + ", ".join(map(str, message[key]))
    elif kind == "connection":
        text = f"{message.get('message', '')!r}, client {message.get('clientId', '?')}, topics: {', '.join(message.get('topics', []))}"
    elif kind == "SUBSCRIBED":
        text = "now: " + ", ".join(message.get("topics", []))
    elif kind == "ERROR":
        error = message.get("error", {})
        text = f"{error.get('code', '?')}: {error.get('message', '')}"
    else:
        text = _compact({k: v for k, v in message.items() if k not in ("type", "timestamp")})
    return _clip(text, room)


def format_line(message: Any, width: int = WIDTH) -> str:
    """``time type topic #seq summary`` in at most ``width`` characters; the time is the
    message's own (UTC, HH:MM:SS.mmm)."""
    if not isinstance(message, dict):
        return _clip(_compact(message), width)
    ts = message.get("timestamp")
    clock = ts[11:23] if isinstance(ts, str) and len(ts) >= 23 else "--:--:--.---"
    seq = message.get("seq")
    kind = _clip(str(message.get("type", "?")), 10)
    topic = _clip(str(message.get("topic") or "-"), ID_WIDTH)
    head = f"{clock}  {kind:<10} {topic:<12} {('#' + str(seq)) if seq is not None else '':>7}  "
    return _clip(head + summary(message, width - len(head)), width)


def notice(event: Event) -> str | None:
    """The stderr line of an event about the link rather than the stream, or None."""
    topics = ", ".join(event.message.get("topics", []))
    if event.kind == "disconnected":
        code, reason, delay = event.message["code"], event.message["reason"], event.message["delay"]
        why = f"{code} {reason}".strip()
        return f"uipd tail: link lost ({why})" + (f"; reconnecting in {delay:.1f} s" if delay is not None else "")
    if event.kind == "recovered":
        return f"uipd tail: resumed where it was for: {topics}"
    if event.kind == "alerts_lost":
        return f"uipd tail: alerts may have been missed for: {topics} (the server could not replay them)"
    return None


async def tail(
    url: str, topics: list[str], *, raw: bool, token: str = "", count: int = 0, width: int = WIDTH, out: IO[str] = sys.stdout,
    backoff: Backoff | None = None, compress: bool = True,
) -> int:
    seen = 0
    # retry_first=False: a daemon that cannot be reached at the start is an error, not a wait.
    async with open_client(url, topics=topics or None, token=token or None, retry_first=False, connect_timeout=CONNECT_TIMEOUT,
                           backoff=backoff or reconnect_backoff(0.5, 5.0), compress=compress) as client:
        async for event in client.events():
            line = notice(event)
            if line is not None:
                print(line, file=sys.stderr, flush=True)
                continue
            message = event.message
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":")) if raw else format_line(message, width)
            print(text, file=out, flush=True)
            if count and message.get("type") in ("UPDATE", "ALERT"):
                seen += 1
                if seen >= count:
                    return 0
    return 0


def _os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than trio's "all attempts to connect ... failed"."""
    for inner in (exc.__cause__, exc.__context__, *getattr(exc.__cause__, "exceptions", ()), *getattr(exc.__context__, "exceptions", ())):
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
    return exc.strerror or str(exc)


def _explain(exc: BaseException, url: str) -> str | None:
    if isinstance(exc, Unreachable) and exc.__cause__ is not None:
        return _explain(exc.__cause__, url)
    if isinstance(exc, Refused) and exc.http_status is None:
        return f"{url} refused the connection: close {exc.code}"
    if isinstance(exc, (Refused, Rejected)):
        status = exc.http_status if isinstance(exc, Refused) else exc.status_code
        hint = " (a token is needed: --token or $UIPD_TOKEN)" if status == 401 else ""
        return f"{url} refused the connection: HTTP {status}{hint}"
    if isinstance(exc, HandshakeTimeout):
        return f"{url}: no handshake within {CONNECT_TIMEOUT:.0f} s"
    if isinstance(exc, OSError):
        return f"cannot connect to {url}: {_os_reason(exc)}"
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        why = exc.__cause__
        return f"cannot connect to {url}: TLS: {getattr(why, 'verify_message', None) or why.reason or why}"
    if isinstance(exc, HandshakeFailed):
        return f"{url}: the WebSocket handshake failed ({exc})"
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
    width = args.width or max(shutil.get_terminal_size((WIDTH, 24)).columns, MIN_WIDTH)
    try:
        return trio.run(lambda: tail(url, args.topics, raw=args.json, token=args.token, count=args.count, width=width,
                                    compress=args.compress))
    except CommandError:
        raise
    except (Exception, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
            return 0
        explained = _explain(exc, url)
        if explained is None:
            raise CommandError(f"{url}: {exc!r}") from None
        raise CommandError(explained) from None
