"""The fan-out's write pass: one task writes every client's new frames, once per scheduler round.

A publish only appends its (shared, pre-framed) frame to each recipient's queue and marks the
client due.  The flusher runs after the tasks that were ready with it, so when publishes come
faster than one round, each client gets all of its new frames in one ``writev``: the system call
per delivery (most of a delivery's cost) is shared by every frame written with it.  A client
whose socket takes only part of them gets a writer task of its own until it has caught up.
"""

from __future__ import annotations

from typing import Protocol

import trio

from uipd.server.deflate import Compressor


class Due(Protocol):
    """What the flusher needs of a connection it writes for (``uipd.server.writer.ConnectionWriter``):
    it depends on this, not on the connection, so neither module imports the other's importer."""

    def flush(self) -> None:
        """Write what is queued now if the socket can take it, else leave it to a writer task."""

    def fault(self, step: str, exc: BaseException | None = None) -> None:
        """A bug in ``step`` of this connection: log it and drop the connection."""


PASS_SLICE = 512
"""Connections a pass writes before it lets the other ready tasks run (a few ms of writes): a
pass over 16,000 clients is ~50 ms, and the API's requests, the handshakes and the receive
loops each wait a whole scheduler round per step."""


class Flusher:
    __slots__ = ("_due", "_wakeup", "rounds", "writes", "frames_written", "writer_starts", "compression")

    def __init__(self) -> None:
        self._due: list[Due] = []
        self.compression = Compressor()
        """Builds each frame's compressed variant once, for every client that negotiated
        permessage-deflate (the daemon configures it), and counts what compression did."""
        self._wakeup = trio.Event()
        # Read by /metrics (uipd.runtime.metrics); each moves once per pass or per client write, never per frame.
        self.rounds = 0
        """Write passes made."""
        self.writes = 0
        """Direct writes (one ``writev`` each)."""
        self.frames_written = 0
        """Frames in those writes: frames per write is how much a system call is shared."""
        self.writer_starts = 0
        """Writer tasks started: a client's socket was full, or a close or resync was due."""

    def schedule(self, connection: Due) -> None:
        """Called synchronously (by the fan-out, through the connection) when a client has new frames."""
        if not self._due:
            self._wakeup.set()
        self._due.append(connection)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            due, self._due = self._due, []
            self.rounds += 1
            for start in range(0, len(due), PASS_SLICE):
                if start:
                    await trio.lowlevel.checkpoint()
                for connection in due[start:start + PASS_SLICE]:
                    try:
                        connection.flush()
                    except Exception:  # a bug in one connection's write ends that connection, not the pass
                        connection.fault("write")
