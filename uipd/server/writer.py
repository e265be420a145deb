"""The write side of a client connection: its queued frames to the socket, and its close.

An idle connection has no writer task.  Frames queued by the core make the connection due for the
flusher's next pass (:mod:`uipd.server.flusher`), which writes them all with one system call
(``flush``); a writer task is started only when frames must wait (the socket is full, a write is
under way) or a close or resync is due, and it ends when the queue is empty again.  A TLS
connection (no synchronous write path) keeps its writer task instead, parked while idle.

The close flow (RFC 6455 5.5.1; docs/protocol.md): once a close is due, every write must end
within ``close_timeout``; our close frame (or the answer to the peer's) goes out last, and the peer
then has ``close_timeout`` to answer before its TCP connection is dropped.  The receive loop that
completes a connection is :class:`uipd.server.connection.ClientConnection`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from uipd.server.clock import now
from uipd.server.transport import TransportClosed

if TYPE_CHECKING:
    from uipd.core.hub import Hub, Session
    from uipd.core.outbound import OutboundQueue
    from uipd.core.recovery import Position
    from uipd.server.flusher import Flusher
    from uipd.server.transport import WebSocketTransport

log = logging.getLogger(__name__)


class ConnectionWriter:
    """One client's session and the write side of its connection: moves its queued frames to the
    socket and closes it.  :class:`~uipd.server.connection.ClientConnection` adds the receive loop.
    """

    __slots__ = (
        "hub", "transport", "nursery", "flusher", "close_timeout", "remote", "session",
        "_writing", "_due", "_write_scope",
    )

    deflate = False
    """The client negotiated permessage-deflate: it is written each frame's compressed variant.
    A class attribute (the compressing connection classes set it), so no connection pays a slot."""

    def __init__(
        self,
        hub: Hub,
        transport: WebSocketTransport,
        nursery: trio.Nursery,
        flusher: Flusher,
        close_timeout: float,
        remote: str = "?",
        *,
        client_id: str,
        allowed_topics: frozenset[str] | None = None,
        expires_in: float | None = None,
        topics: tuple[str, ...] | None = None,
        since: dict[str, Position] | None = None,
    ) -> None:
        self.hub = hub
        self.remote = remote
        """The client's address (for per-address limits and logs)."""
        self.transport = transport
        self.nursery = nursery
        """The connection's nursery: the receive loop is its body and the writer runs in it;
        cancelling its scope ends the connection (it gets a deadline once our close frame is out:
        the peer has close_timeout to answer)."""
        self.flusher = flusher
        self.close_timeout = close_timeout
        self._writing = False
        self._due = True
        """Waiting for the flusher's next pass.  True until ``open``: the frames ``hub.connect``
        queues must not make the flusher see a connection with no session yet (if ``connect``
        raises, nothing refers to this half-built connection), nor one that is not registered."""
        self._write_scope: trio.CancelScope | None = None
        self.session: Session = hub.connect(
            client_id, now(), self, allowed_topics=allowed_topics, expires_in=expires_in, topics=topics, since=since
        )

    def open(self, answer: bytes | None) -> None:
        """The connection is registered: write what ``hub.connect`` queued (the connection
        message, the SNAPSHOT), after ``answer``, the handshake's ``101`` when it is not written
        yet (a plain socket), in the same system call.  A client then reads its whole opening at
        once: the 101 written alone, and the frames a flusher pass later, cost it one read and one
        wake-up more per connect (a connection storm's generator is CPU-bound on exactly that)."""
        if answer is None:
            self.flush()
            return
        self._due = False
        queue = self.session.outbound
        if queue.closing is None and not queue.resync_pending:
            self._write_taken(queue.take(), answer)
            return
        self.transport.gate.write_now([answer])
        self.flush()

    def fault(self, step: str, exc: BaseException | None = None) -> None:
        """A bug in one of this connection's steps run by a shared task (the flusher's write
        pass, the heartbeat): one log line naming the client, and the connection is dropped, so
        the task goes on with the others."""
        log.error("client %s (%s): %s failed; dropping it", self.session.id, self.remote, step, exc_info=exc or True)
        self.abort()

    def _wake(self) -> None:
        """Called by the core, synchronously, when frames were queued or a close or resync is due."""
        if not self._writing:
            if not self._due:
                self._due = True
                self.flusher.schedule(self)
            return
        if self._write_scope is not None and self.session.outbound.closing is not None:
            # A client being closed gets close_timeout to take the frame in flight, so that its
            # close frame can follow; past that its TCP connection is dropped.
            self._write_scope.deadline = min(self._write_scope.deadline, trio.current_time() + self.close_timeout)

    __call__ = _wake
    """The writer is its queue's ``wake``: a bound method kept by every queue was 64 bytes a connection."""

    def flush(self) -> None:
        """The flusher's pass: write what is queued at once if the socket can take it, else
        leave it to a writer task."""
        self._due = False
        if self._writing:
            return  # the writer takes it
        queue = self.session.outbound
        if queue.closing is None and not queue.resync_pending and self.transport.direct_write_possible:
            frames = queue.take()
            if frames:  # nothing queued: nothing to do (a writer task was started for nothing here before)
                self._write_taken(frames)
            return
        elif queue.closing is not None:
            if self._close_now(queue):
                return
        elif not len(queue) and not queue.resync_pending:
            return
        self._start_writer()  # the rest of a partial write, a close, a resync, or no direct path

    def _write_taken(self, frames: list[bytes], head: bytes | None = None) -> None:
        """Write frames just taken from the queue, after ``head`` (the 101, see ``open``), with
        one system call; what the kernel does not take, or a large frame still to be compressed
        off the loop, is left to a writer task."""
        encoded = self._encoded(frames) if frames else []
        gate = self.transport.gate
        if encoded is None:
            if head is not None:
                gate.write_now([head])
            self._start_writer(frames)
            return
        gate.write_now(encoded if head is None else [head, *encoded])
        flusher = self.flusher
        flusher.writes += 1
        flusher.frames_written += len(encoded)
        if gate.needs_flush:
            self._start_writer()  # the rest of a partial write, or the reset it found
        elif frames:
            self.session.outbound.written()

    def write_ping(self, frame: bytes) -> bool:
        """The heartbeat's direct path (``liveness.WritePing``): write a ping now when nothing is
        queued, due or being written, so an idle client's ping costs one system call and no
        trip through the queue and the flusher.  False: the caller queues it instead (it then
        goes out in order, after the frames before it)."""
        if self._writing or self._due:
            return False
        queue = self.session.outbound
        transport = self.transport
        if len(queue) or queue.closing is not None or queue.resync_pending or not transport.direct_write_possible:
            return False
        gate = transport.gate
        gate.write_now([frame])
        flusher = self.flusher
        flusher.writes += 1
        flusher.frames_written += 1
        compression = flusher.compression
        if self.deflate:  # a control frame: sent as it is, counted as the compressing clients' bytes
            compression.input_bytes += len(frame)
            compression.output_bytes += len(frame)
        else:
            compression.plain_bytes += len(frame)
        if gate.needs_flush:
            self._start_writer()  # the rest of a partial write, or the reset it found
        return True

    def _close_now(self, queue: OutboundQueue) -> bool:
        """A close is due: when the socket can take it, write the queued frames and our close
        frame with one system call in this pass, as ``_close`` would have in a task (a drain
        closes every client in one flusher pass instead of starting a writer task each).  True:
        done, the peer has close_timeout to answer (or a writer task was started with the frames
        taken: one of them is to be compressed off the loop first); False: a writer task is
        needed (the socket is busy or took only part, frames are held behind a recovery answer,
        or a violation's EOF)."""
        transport = self.transport
        if not transport.direct_write_possible or transport.violation or queue.resync_pending:
            return False
        frames = queue.take()
        encoded = self._encoded(frames)
        if encoded is None:
            self._start_writer(frames)
            return True
        frames = encoded
        held = bool(len(queue))  # the close goes after them: the writer's
        if not held:
            closing = queue.closing
            assert closing is not None
            frames.append(transport.close_frame(closing.code, closing.reason))
        gate = transport.gate
        if frames:
            gate.write_now(frames)
            flusher = self.flusher
            flusher.writes += 1
            flusher.frames_written += len(frames)
        if gate.needs_flush:
            return False  # the writer writes the rest (our close frame, if out, at its end)
        queue.written()
        if held:
            return False
        self._close_sent()
        return True

    def _encoded(self, frames: list[bytes]) -> list[bytes] | None:
        """The bytes to write for frames taken from the queue: for a compressing client each
        frame's compressed variant (None: a large one is not built yet, see ``Compressor.ready``)."""
        compression = self.flusher.compression
        if self.deflate:
            return compression.variants(frames)
        compression.plain_bytes += sum(map(len, frames))
        return frames

    def _start_writer(self, taken: list[bytes] | None = None) -> None:
        """Start the writer task; ``taken``: frames already taken from the queue, written first."""
        self.flusher.writer_starts += 1
        self._writing = True
        try:
            self.nursery.start_soon(self._write_loop, taken)
        except RuntimeError:  # the connection is over (its nursery is closed)
            self._writing = False

    def abort(self) -> None:
        self.nursery.cancel_scope.cancel()

    def finish(self) -> None:
        """The receive side is over (the peer's close, its EOF, the close handshake done).  A
        close frame still due, or still being written, is given close_timeout to go out (the
        peer's close may have crossed ours, or it half-closed right after its close frame);
        anything else the writer was doing is dropped."""
        transport = self.transport
        if self.session.outbound.closing is None or transport.close_sent or transport.gate.broken:
            self.abort()
            return
        scope = self.nursery.cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)
        if not self._writing:
            self._start_writer()

    async def _write_loop(self, taken: list[bytes] | None = None) -> None:
        queue = self.session.outbound
        transport = self.transport
        compression = self.flusher.compression
        try:
            while True:
                frames = queue.take()
                if taken:
                    frames, taken = taken + frames, None
                if frames and self.deflate:
                    await compression.ready(frames)  # large frames: off the loop, once for everyone
                    frames = compression.variants(frames, inline=True) or []
                    if queue.closing is None and transport.direct_write_possible:
                        # As the flusher's pass would have: no copy of a shared snapshot per
                        # client (the join below); what the kernel does not take stays pending.
                        transport.gate.write_now(frames)
                        if not transport.gate.needs_flush:
                            queue.written()
                            continue
                        frames = []  # the rest is pending: written (awaited) below
                elif frames:
                    compression.plain_bytes += sum(map(len, frames))
                if frames or transport.gate.needs_flush:
                    # Once a close is due, every write must end within close_timeout: a client
                    # that stopped reading is dropped then, whatever the close.
                    deadline = math.inf if queue.closing is None else trio.current_time() + self.close_timeout
                    with trio.CancelScope(deadline=deadline) as self._write_scope:
                        try:
                            await transport.write(b"".join(frames))
                        except TransportClosed:
                            self.abort()
                            return
                    scope, self._write_scope = self._write_scope, None
                    if scope.cancelled_caught:
                        # A partial frame went out: no close frame can follow it, drop the connection.
                        self.abort()
                        return
                    queue.written()
                    continue
                if queue.closing is not None:
                    await self._close(queue.closing.code, queue.closing.reason)
                    return
                if self.hub.take_resync(self.session, now()):
                    continue
                if await self._idle():
                    continue
                return  # nothing left to write: no task while idle
        finally:
            self._writing = False

    async def _idle(self) -> bool:
        """The writer has nothing left to do: True once there is more (the writer stays), False
        to end the writer task (a plain socket: the flusher writes directly until it fills)."""
        return False

    async def _close(self, code: int, reason: str) -> None:
        """Send our close frame (or answer the peer's), then give the peer close_timeout to
        answer before the TCP connection is dropped."""
        transport = self.transport
        with trio.move_on_after(self.close_timeout) as scope:
            try:
                await transport.close(code, reason)
                if transport.violation:
                    # The peer's close frame could not be parsed any more: end our side of the
                    # TCP connection instead, so a client that got our close frame closes at once.
                    await transport.gate.send_eof()
            except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                scope.cancel()
        if scope.cancelled_caught:
            self.abort()  # broken: nothing more to wait for
            return
        self._close_sent()

    def _close_sent(self) -> None:
        """Our close frame is out: done if the peer's came first (the server closes the TCP
        connection first), else the receive loop waits close_timeout for the peer's."""
        if self.transport.closed:
            self.abort()
            return
        scope = self.nursery.cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)


class TlsWriter(ConnectionWriter):
    """A connection with no synchronous write path (TLS: every byte goes through the SSL
    stream's ``send_all``), so every write needs a task.  Its writer task is kept for the
    connection's life, parked while the queue is empty, instead of being started for every
    flusher pass (which made ``uipd_writer_tasks_started_total`` follow the message rate).  Only
    TLS connections carry the extra slot; their SSL state is already several times the size of a
    plain connection."""

    __slots__ = ("_parked",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parked: trio.Event | None = None
        """Set while the writer waits for frames; the flusher's pass (``_start_writer``) wakes it."""
        super().__init__(*args, **kwargs)

    def _start_writer(self, taken: list[bytes] | None = None) -> None:
        parked = self._parked
        if parked is None:
            super()._start_writer(taken)
            return
        assert not taken  # frames are taken in the flusher's pass only with a direct write path (never TLS)
        self._parked = None
        self._writing = True
        parked.set()

    async def _idle(self) -> bool:
        self._parked = parked = trio.Event()
        self._writing = False  # frames queued from now on make the connection due, and wake us
        await parked.wait()
        return True
