"""A test WebSocket client on wsproto over a real trio TCP stream, with full control of the wire:
it can stop reading, skip pongs, send binary or malformed frames, and reports close codes."""

from __future__ import annotations

import json
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class Rejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


class Closed(Exception):
    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason}")
        self.code = code
        self.reason = reason


class RawClient:
    def __init__(self, stream: trio.SocketStream, auto_pong: bool = True) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.auto_pong = auto_pong
        self.pings_seen = 0
        self._parts: list[str] = []
        self._pending: list[Any] = []

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", *, auto_pong: bool = True, headers: list[tuple[bytes, bytes]] | None = None, ssl_context: Any = None
    ) -> RawClient:
        if ssl_context is not None:
            stream = await trio.open_ssl_over_tcp_stream("localhost", port, ssl_context=ssl_context, https_compatible=True)
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream, auto_pong)
        await stream.send_all(client.ws.send(Request(host=f"127.0.0.1:{port}", target=path, extra_headers=headers or [])))
        with trio.fail_after(5):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise Closed(None, "EOF during handshake")
                client.ws.receive_data(data)
                accepted = False
                for event in client.ws.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, RejectConnection):
                        await stream.aclose()
                        raise Rejected(event.status_code)
                    elif accepted:
                        # frames that came in the same read as the 101 response
                        client._pending.append(event)
                if accepted:
                    return client

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _events(self) -> list[Any]:
        if self._pending:
            events, self._pending = self._pending, []
            return events
        buffered = list(self.ws.events())
        if buffered:
            return buffered
        data = await self.stream.receive_some(1 << 20)
        if not data:
            raise Closed(None, "EOF")
        self.ws.receive_data(data)
        return list(self.ws.events())

    async def recv(self, timeout: float = 5.0) -> str:
        """The next text message; answers pings (unless auto_pong is off); raises Closed on close."""
        with trio.fail_after(timeout):
            while True:
                for i, event in enumerate(events := await self._events()):
                    rest = events[i + 1 :]
                    if isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            text, self._parts = "".join(self._parts), []
                            self._pending = rest + self._pending
                            return text
                    elif isinstance(event, Ping):
                        self.pings_seen += 1
                        if self.auto_pong:
                            await self.stream.send_all(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        try:
                            await self.stream.send_all(self.ws.send(event.response()))
                        except (trio.BrokenResourceError, trio.ClosedResourceError, Exception):
                            pass
                        raise Closed(event.code, event.reason)

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await self.recv(timeout))

    async def recv_until(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                msg = await self.recv_json(timeout)
                if predicate(msg):
                    return msg

    async def handshake_messages(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return await self.recv_json(), await self.recv_json()

    async def expect_close(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; return its close code (None: TCP closed with no close frame)."""
        try:
            with trio.fail_after(timeout):
                while True:
                    await self.recv(timeout)
        except Closed as closed:
            return closed.code
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionResetError):
            return None

    async def barrier(self) -> list[dict[str, Any]]:
        """Send a ping action and return every message that arrived before its PONG."""
        await self.send_json({"action": "ping"})
        seen = []
        while True:
            msg = await self.recv_json()
            if msg["type"] == "PONG":
                return seen
            seen.append(msg)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
