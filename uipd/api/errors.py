"""What the API's parts share: the ASGI types and the refusal every guard and route raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Reject(Exception):
    """Answer the request with ``status`` and an error body ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class Gone(Exception):
    """The client closed its connection mid-request: there is nobody to answer.  (An answer cost an
    h11 encode and a send each; a slowloris client closing its hundreds of requests at once
    stalled every other request that long.)"""


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}
