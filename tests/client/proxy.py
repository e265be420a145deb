"""A loopback TCP proxy in front of the daemon's WebSocket port whose links a test can cut (every
open connection dropped at once, no close frame: a phone in a tunnel), keep down for a while, point
at another daemon, whose server-to-client stream can lose chosen WebSocket frames (a gap in a
topic's seq), and that can refuse chosen handshakes with HTTP 400 (a server that does not take the
URL).  Runs in the test's trio loop."""

from __future__ import annotations

from collections.abc import Callable

import trio
from attrs import define, field

from tests.loopback import serve_loopback

DropRule = Callable[[bytes], bool]
"""Given a server frame's payload: True to drop the frame."""


@define
class CuttableProxy:
    target_port: int
    port: int = 0
    drop: DropRule | None = None
    """Applied to every unfragmented server frame (uipd sends each message as one frame)."""
    dropped: list[bytes] = field(factory=list)
    refuse: Callable[[bytes], bool] | None = None
    """Given a handshake's request head: True to answer it HTTP 400 (counted in ``refused``)."""
    refused: int = 0
    connections: int = 0
    _scopes: set[trio.CancelScope] = field(factory=set)
    _up: trio.Event = field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._up.set()

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def cut(self, *, stay_down: bool = False) -> None:
        """Drop every open link; with ``stay_down`` new ones wait until :meth:`restore`."""
        if stay_down and self._up.is_set():
            self._up = trio.Event()
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self._up.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_loopback(self._serve, lambda port: setattr(self, "port", port), task_status)

    async def _serve(self, client: trio.SocketStream) -> None:
        async with client:
            await self._up.wait()
            head = b""
            while self.refuse is not None and b"\r\n\r\n" not in head:
                if not (data := await client.receive_some(65536)):
                    return
                head += data
            if self.refuse is not None and self.refuse(head):
                self.refused += 1
                await client.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            except OSError:
                return
            self.connections += 1
            if head:
                await server.send_all(head)
            async with server, trio.open_nursery() as nursery:
                self._scopes.add(nursery.cancel_scope)
                try:
                    nursery.start_soon(self._pump, client, server, False, nursery.cancel_scope)
                    nursery.start_soon(self._pump, server, client, True, nursery.cancel_scope)
                    await trio.sleep_forever()
                finally:
                    self._scopes.discard(nursery.cancel_scope)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, filtered: bool, scope: trio.CancelScope) -> None:
        buf = b""
        head_done = not filtered  # the HTTP answer of the handshake passes as it is
        try:
            while data := await src.receive_some(65536):
                if not filtered or self.drop is None:
                    await dst.send_all(data)
                    continue
                buf += data
                if not head_done:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    await dst.send_all(buf[: end + 4])
                    buf, head_done = buf[end + 4 :], True
                out = bytearray()
                while (frame := _frame_length(buf)) is not None:
                    whole, payload_at = frame
                    if self.drop(buf[payload_at:whole]):
                        self.dropped.append(buf[payload_at:whole])
                    else:
                        out += buf[:whole]
                    buf = buf[whole:]
                if out:
                    await dst.send_all(bytes(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side closed: so is the other


def _frame_length(buf: bytes) -> tuple[int, int] | None:
    """(end of the first whole frame, start of its payload) of an unmasked server frame, or None."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    return (at + n, at) if len(buf) >= at + n else None
