"""The HTTP API client ``uipd publish`` and ``uipd stats`` share: the URL and key from the flags,
``-c FILE`` or the defaults, and every failure as one :class:`~uipd.cli.common.CommandError` line."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx

from uipd.cli.common import CONFIG_HELP, DEFAULT_API, CommandError, UsageError, endpoints

TIMEOUT = 10.0


def add_api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", help=f"HTTP API URL (default: from -c, else {DEFAULT_API})")
    p.add_argument("--key", default=os.environ.get("UIPD_API_KEY"), help="API key (default: $UIPD_API_KEY, else from -c)")
    p.add_argument("-c", "--config", help=CONFIG_HELP)


def request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """The JSON answer of the API (flags from :func:`add_api_args`) to ``method path``."""
    ep = endpoints(args.config)
    base = (args.api or ep.api).rstrip("/")
    key = args.key if args.key is not None else ep.key
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = base + path
    try:  # encoded here, not by httpx: what JSON cannot carry (1e400 read as inf) is one line, not a traceback
        content = None if body is None else json.dumps(body, allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"the data cannot be sent as JSON: {exc}") from None
    if content is not None:
        headers["content-type"] = "application/json"
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT) as client:
            response = client.request(method, path, content=content)
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
    """``Connection refused`` rather than ``[Errno 111] Connection refused``."""
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(exc).__name__
