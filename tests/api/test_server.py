"""The API listener (uipd.api.server): hypercorn's protocol on the daemon's accept loop."""

from __future__ import annotations

import gc
import inspect
import socket
import threading
import time
from importlib.metadata import version

import httpx
import pytest
import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

BURST = 300
"""Connections opened while the daemon's loop is busy: more than hypercorn's own backlog (100)."""


def test_the_hypercorn_internals_used_are_the_pinned_ones() -> None:
    """uipd.api.server assembles hypercorn's trio worker itself (to accept on uipd.server.accept):
    an upgrade that changes these must be looked at, not found in production."""
    assert version("hypercorn") == "0.18.0"
    assert list(inspect.signature(TCPServer).parameters) == ["app", "config", "context", "state", "stream"]
    assert list(inspect.signature(WorkerContext).parameters) == ["max_requests"]
    assert "keep_alive_timeout" in inspect.getsource(TCPServer._idle_timeout)  # the request head's deadline
    assert "terminated" in inspect.getsource(TCPServer._idle_timeout)  # what ends idle connections at shutdown
    # what uipd.api.server.ApiConnection overrides, and the attributes its overrides use
    assert {"run", "_read_data", "_idle_timeout"} <= set(vars(TCPServer))
    source = inspect.getsource(TCPServer)
    assert all(name in source for name in (
        "self.protocol =", "self.idle_task = TrioSingleTask()", "self.idle_task.restart(self._task_group, self._idle_timeout)",
        "self.idle_task.stop()", "def _initiate_server_close",
    ))


async def test_a_burst_of_connections_while_the_loop_is_busy_waits_in_the_backlog(daemon_factory):
    """With hypercorn's backlog of 100, the SYNs past it were dropped and those clients (a health
    checker among them) waited a second for their retransmission."""
    async with daemon_factory() as d:
        go, sockets, took = threading.Event(), [], []

        def connect_all() -> None:
            go.wait()
            start = time.monotonic()
            for _ in range(BURST):
                sockets.append(socket.create_connection(("127.0.0.1", d.api_port), timeout=5))
            took.append(time.monotonic() - start)

        thread = threading.Thread(target=connect_all, daemon=True)
        thread.start()
        try:
            go.set()
            time.sleep(0.5)  # the daemon's loop (this one) takes nothing meanwhile: all wait in the backlog
            await trio.to_thread.run_sync(thread.join, 10)
            assert took and took[0] < 0.9, took  # no SYN had to be sent again (1 s)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.api_port}", timeout=5) as http:
                assert (await http.get("/healthz")).status_code == 200
        finally:
            for s in sockets:
                s.close()


HALF_SENT = {
    "head": b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ",
    "body": b"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n12345",
}


def _api_connection_tasks() -> list[trio.lowlevel.Task]:
    found, todo = [], [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.name == "uipd api connection":
            found.append(task)
        todo += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return found


@pytest.mark.parametrize("part", sorted(HALF_SENT))
async def test_a_client_gone_mid_request_is_sent_nothing_and_its_connection_ends_at_once(daemon_factory, part):
    """hypercorn answered the end of the stream of a half-sent request with a 400 (written to a peer
    that closed), and the connection's task and head timer lived on until the head's deadline:
    a slowloris client's exit closing hundreds at once cost the loop ~1 ms each, and a cyclic
    collection of the oldest generation (100 ms) freed them later.  The client here half-closes,
    so that it can read whatever the daemon would still send."""
    async with daemon_factory({"api": {"request_timeout": 60.0}}) as d:
        gc.collect()
        stream = await trio.open_tcp_stream("127.0.0.1", d.api_port)
        try:
            await stream.send_all(HALF_SENT[part])
            with trio.fail_after(5):
                while not _api_connection_tasks():  # taken by the daemon and parsed as far as it goes
                    await trio.sleep(0.01)
            await stream.send_eof()
            with trio.fail_after(5):
                assert await stream.receive_some(4096) == b""  # no 400: the daemon just closed
                while _api_connection_tasks():  # not left waiting for the 60 s head deadline
                    await trio.sleep(0.01)
        finally:
            await stream.aclose()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage if isinstance(o, TCPServer)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert left == []  # freed by reference counting when it closed


async def test_a_complete_request_is_still_answered(daemon_factory):
    """The end of the stream is no longer handed to h11: a request sent whole, then a keep-alive
    connection closed by its client, work as before; and that connection ends at once (hypercorn's
    idle timer kept it until the head's deadline)."""
    async with daemon_factory({"api": {"request_timeout": 60.0}}) as d:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.api_port}", timeout=5) as http:
            for _ in range(3):  # on one keep-alive connection
                assert (await http.get("/healthz")).status_code == 200
        with trio.fail_after(5):
            while _api_connection_tasks():  # closed by httpx: ended without waiting for the idle deadline
                await trio.sleep(0.01)
