"""A loopback TCP proxy in front of Redis that can stop forwarding while every connection stays
open: what a blackholed Redis looks like to a node (TCP accepted, no answer ever); or delay every
byte by ``delay`` seconds each way (a slow network: reads that are still on their way while
messages are published).  Runs in the test's trio loop, so the shared Redis itself is never paused."""

from __future__ import annotations

import trio
from attrs import define, field

from tests.loopback import serve_loopback


@define
class FreezableProxy:
    target_port: int
    port: int = 0
    """The proxy's own port, once :meth:`run` has started."""
    delay: float = 0.0
    """Seconds every chunk waits before it is forwarded (each direction; order is kept)."""
    _open: dict[str, trio.Event] = field(factory=lambda: {"up": trio.Event(), "down": trio.Event()})
    """Per direction (up: to Redis, down: back to the node), set while bytes flow."""

    def __attrs_post_init__(self) -> None:
        self.thaw()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self, *directions: str) -> None:
        """Stop forwarding (both directions by default; ``"down"`` only: Redis gets the commands,
        the node never gets the answers)."""
        for direction in directions or ("up", "down"):
            if self._open[direction].is_set():
                self._open[direction] = trio.Event()

    def thaw(self) -> None:
        for event in self._open.values():
            event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_loopback(self._serve, lambda port: setattr(self, "port", port), task_status)

    async def _serve(self, downstream: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await downstream.aclose()
            return
        async with downstream, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, downstream, upstream, "up", nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, downstream, "down", nursery.cancel_scope)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, direction: str, scope: trio.CancelScope) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, dst, direction, scope)
            try:
                while True:
                    await self._open[direction].wait()
                    data = await src.receive_some(65536)
                    if not data:
                        break
                    await send.send((trio.current_time() + self.delay, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await send.aclose()

    async def _deliver(self, receive: trio.MemoryReceiveChannel[tuple[float, bytes]], dst: trio.SocketStream, direction: str, scope: trio.CancelScope) -> None:
        try:
            async for due, data in receive:
                await trio.sleep_until(due)
                await self._open[direction].wait()  # frozen meanwhile: hold what was read
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side closed: so is the other
