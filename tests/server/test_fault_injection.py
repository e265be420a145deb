"""Issue 12 item 1: every per-connection step fails for that connection only.

A real daemon; a canary client subscribed to ``accidents`` receives a steady stream of UPDATEs
published through the HTTP API the whole time.  For each step a connection goes through
(construction, ``hub.connect``, register, the opening write, ``hub.receive``, the flusher's
``flush``, the writer, the close, closing the socket, ``hub.disconnect``, the heartbeat's handling
of its session, unregister), one victim connection is made to raise there.  The daemon must survive, the victim's
connection must end (a victim refused while its session is made gets a 500), the error must be
logged once naming the victim's client id, and the canary must see every message in seq order
with no gap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from wsproto.events import BytesMessage, TextMessage

from tests.conftest import connect, running_daemon
from tests.wsclient import Closed, RawClient, Rejected
from uipd.core import hub as hub_module
from uipd.core.dispatch import Dispatcher
from uipd.core.hub import Hub
from uipd.core.topics import TopicTable
from uipd.runtime.daemon import Daemon
from uipd.runtime.connections import ConnectionRegistry
from uipd.server.clock import now
from uipd.server.connection import ClientConnection
from uipd.server.transport import WebSocketTransport, WriteGate
from uipd.server.writer import ConnectionWriter

CONFIG = {"heartbeat": {"interval": 0.4, "timeout": 30}, "server": {"close_timeout": 0.5}}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


class Fault:
    """What one case injects: armed by the test, it fires once for the victim and records its id."""

    def __init__(self) -> None:
        self.armed = False
        self.victim: str | None = None
        """The victim's client id (known before the fault fires, or recorded when it does)."""
        self.fired = 0
        self.on_arm: Callable[[], None] = lambda: None
        """Run when the fault is armed, once the victim is connected."""

    def fire(self, what: str) -> None:
        self.fired += 1
        raise {"runtime": RuntimeError, "attribute": AttributeError, "key": KeyError}[what]("injected fault")

    def hits(self, client_id: str | None) -> bool:
        return self.armed and client_id is not None and client_id == self.victim


class Exploding:
    """A value whose every comparison raises: corrupt state in one session."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    def _boom(self, other: object) -> bool:
        self.fault.fired += 1
        raise RuntimeError("injected fault: corrupt session state")

    __lt__ = __le__ = __gt__ = __ge__ = _boom


def connection_of(d: Daemon, client_id: str | None) -> ClientConnection | None:
    return d.connections.get(client_id) if client_id else None


# -- the steps: each installs its fault, and triggers it for a connected victim (or connects one) --


def _construction(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ClientConnection.__init__

    def init(self: ClientConnection, *args: Any, **kwargs: Any) -> None:
        if fault.armed and not fault.fired:
            fault.victim = kwargs.get("client_id")
            fault.fire("runtime")
        original(self, *args, **kwargs)

    mp.setattr(ClientConnection, "__init__", init)


def _hub_connect(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    # The crash: the SNAPSHOT cannot be built after the connection message was queued.
    connection_frame, snapshot_frame = hub_module.wire.connection_frame, TopicTable.snapshot_frame

    def hello(*args: Any) -> bytes:
        if fault.armed and not fault.fired:
            fault.victim = args[3]
        return connection_frame(*args)

    def snapshot(self: TopicTable, *args: Any, **kwargs: Any) -> bytes:
        if fault.armed and not fault.fired:
            fault.fire("runtime")
        return snapshot_frame(self, *args, **kwargs)

    mp.setattr(hub_module.wire, "connection_frame", hello)
    mp.setattr(TopicTable, "snapshot_frame", snapshot)


def _receive(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = Dispatcher.receive  # what Hub.receive_piece hands a whole message to

    def receive(self: Dispatcher, session: Any, *args: Any) -> None:
        if fault.hits(session.id):
            fault.fire("key")
        original(self, session, *args)

    mp.setattr(Dispatcher, "receive", receive)


def _flush(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ClientConnection.flush

    def flush(self: ClientConnection) -> None:
        if fault.hits(self.session.id):
            fault.fire("attribute")
        original(self)

    mp.setattr(ClientConnection, "flush", flush)


def _open(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ClientConnection.open

    def open_(self: ClientConnection, answer: bytes | None) -> None:
        if fault.armed and not fault.fired:
            fault.victim = self.session.id
            fault.fire("runtime")
        original(self, answer)

    mp.setattr(ClientConnection, "open", open_)


def _transport_method(name: str) -> Callable[[pytest.MonkeyPatch, Fault, Daemon], None]:
    """A fault in the writer task's ``name``: the flusher's pass may not write the close itself
    (``_close_now``, see ``_direct_close`` for that path), so that a writer task writes it."""

    def install(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
        original = getattr(WebSocketTransport, name)
        mp.setattr(ConnectionWriter, "_close_now", lambda self, queue: False)

        async def method(self: WebSocketTransport, *args: Any) -> None:
            connection = connection_of(d, fault.victim)
            if fault.armed and connection is not None and connection.transport is self:
                fault.fire("runtime")
            await original(self, *args)

        mp.setattr(WebSocketTransport, name, method)

    return install


def _direct_close(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    """A fault where the flusher's pass writes the queued frames and the close frame itself."""
    original = WebSocketTransport.close_frame

    def close_frame(self: WebSocketTransport, *args: Any) -> bytes:
        connection = connection_of(d, fault.victim)
        if fault.armed and connection is not None and connection.transport is self:
            fault.fire("runtime")
        return original(self, *args)

    mp.setattr(WebSocketTransport, "close_frame", close_frame)


def _socket_close(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original, original_now = WriteGate.aclose, WriteGate.close_now
    gates: list[WriteGate] = []

    async def aclose(self: WriteGate) -> None:
        try:
            await original(self)  # the socket is closed (the daemon closes it with a cancelled scope)
        finally:
            if self in gates:
                fault.fire("runtime")

    def close_now(self: WriteGate) -> bool:
        try:
            return original_now(self)  # a plain socket is closed at once
        finally:
            if self in gates:
                fault.fire("runtime")

    def arm() -> None:
        connection = connection_of(d, fault.victim)
        assert connection is not None
        gates.append(connection.transport.gate)

    mp.setattr(WriteGate, "aclose", aclose)
    mp.setattr(WriteGate, "close_now", close_now)
    fault.on_arm = arm


def _disconnect(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = Hub.disconnect

    def disconnect(self: Hub, session: Any) -> None:
        if fault.hits(session.id):
            fault.fire("key")
        original(self, session)

    mp.setattr(Hub, "disconnect", disconnect)


def _heartbeat(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    def arm() -> None:
        d.hub.sessions[fault.victim].expires_at = Exploding(fault)  # type: ignore[assignment, index]

    fault.on_arm = arm


def _write_ping(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ClientConnection.write_ping

    def write_ping(self: ClientConnection, frame: bytes) -> bool:
        if fault.hits(self.session.id):
            fault.fire("attribute")
        return original(self, frame)

    mp.setattr(ClientConnection, "write_ping", write_ping)


def _register(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ConnectionRegistry.register

    def register(self: ConnectionRegistry, connection: ClientConnection) -> Callable[[], None]:
        if fault.armed and not fault.fired:
            fault.victim = connection.session.id
            fault.fire("runtime")
        return original(self, connection)

    mp.setattr(ConnectionRegistry, "register", register)


def _unregister(mp: pytest.MonkeyPatch, fault: Fault, d: Daemon) -> None:
    original = ConnectionRegistry.register

    def register(self: ConnectionRegistry, connection: ClientConnection) -> Callable[[], None]:
        undo = original(self, connection)
        client_id = connection.session.id

        def unregister() -> None:
            undo()
            if fault.hits(client_id):
                fault.fire("attribute")

        return unregister

    mp.setattr(ConnectionRegistry, "register", register)


async def _send_ping(victim: RawClient) -> None:
    await victim.send_json({"action": "ping"})


async def _send_ping_then_binary(victim: RawClient) -> None:
    # The PONG is queued, then the binary frame asks for a close after it: a writer task writes both.
    await victim.send_raw(victim.ws.send(TextMessage('{"action":"ping"}')) + victim.ws.send(BytesMessage(b"\x00")))


async def _send_binary(victim: RawClient) -> None:
    await victim.send_bytes(b"\x00")


async def _hang_up(victim: RawClient) -> None:
    await victim.aclose()


async def _nothing(victim: RawClient) -> None:
    """The next publish (the flusher), or the next heartbeat tick, does it."""


# (install, trigger for a connected victim; None: the fault fires while the victim connects)
STEPS: dict[str, tuple[Callable[[pytest.MonkeyPatch, Fault, Daemon], None], Any]] = {
    "construction": (_construction, None),
    "hub.connect": (_hub_connect, None),
    "register": (_register, None),
    "open": (_open, None),
    "hub.receive": (_receive, _send_ping),
    "flush": (_flush, _nothing),
    "writer": (_transport_method("write"), _send_ping_then_binary),
    "close": (_transport_method("close"), _send_binary),
    "direct close": (_direct_close, _send_ping_then_binary),
    "socket close": (_socket_close, _hang_up),
    "hub.disconnect": (_disconnect, _hang_up),
    "unregister": (_unregister, _hang_up),
    "heartbeat": (_heartbeat, _nothing),
    "heartbeat ping": (_write_ping, _nothing),
}


async def publish_steadily(api: httpx.AsyncClient, seqs: list[int], stop: trio.Event, stopped: trio.Event) -> None:
    n = 0
    while not stop.is_set():
        r = await api.post("/api/publish", json={"topic": "accidents", "data": [{"id": "canary", "n": n}]})
        assert r.status_code == 200, r.text
        seqs.append(r.json()["seq"])
        n += 1
        await trio.sleep(0.01)
    stopped.set()


async def read_canary(canary: RawClient, seen: list[int]) -> None:
    while True:
        msg = await canary.recv_json(timeout=10)
        if msg["type"] == "UPDATE":
            seen.append(msg["seq"])


@pytest.mark.parametrize("step", list(STEPS))
async def test_one_connection_failing_at_any_step_leaves_the_daemon_and_the_canary_whole(step, monkeypatch, caplog):
    install, trigger = STEPS[step]
    caplog.set_level(logging.WARNING)
    async with running_daemon(CONFIG) as d, httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.api_port}", timeout=10) as api:
        canary = await connect(d)
        await canary.send_json({"action": "subscribe", "topics": ["accidents"]})
        assert (await canary.recv_json())["type"] == "SUBSCRIBED"
        published: list[int] = []
        seen: list[int] = []
        stop, stopped = trio.Event(), trio.Event()
        fault = Fault()
        install(monkeypatch, fault, d)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_steadily, api, published, stop, stopped)
            nursery.start_soon(read_canary, canary, seen)
            await until(lambda: len(seen) >= 5)

            victim: RawClient | None = None
            if trigger is None:  # the victim's connection fails while it is being set up
                fault.armed = True
                if step == "open":  # registered, then its opening write failed: dropped, nothing written
                    with pytest.raises(Closed):
                        await RawClient.connect(d.ws_port)
                else:  # the 101 waits for the session: the victim is answered 500 instead
                    with pytest.raises(Rejected) as refused:
                        await RawClient.connect(d.ws_port)
                    assert refused.value.status == 500
                    assert d.clients.refusals["internal_error"] == 1
            else:
                victim = await RawClient.connect(d.ws_port)
                hello, _ = await victim.handshake_messages()
                fault.victim = hello["clientId"]
                fault.on_arm()
                fault.armed = True
                await trigger(victim)
            if victim is not None and trigger is not _hang_up:
                assert await victim.expect_close(timeout=5) in (None, 1006)  # dropped: no close frame
            await until(lambda: fault.fired >= 1)
            await until(lambda: fault.victim is not None and fault.victim not in d.connections)
            if step != "hub.disconnect":  # a disconnect that raised cannot be undone by the shell
                await until(lambda: fault.victim not in d.hub.sessions)
            # the daemon keeps serving: more publishes reach the canary, a new client connects
            mark = len(published)
            await until(lambda: len(published) >= mark + 5)
            fresh = await connect(d)
            await fresh.barrier()  # its ping action is answered
            await fresh.aclose()
            stop.set()
            await stopped.wait()  # every publish answered: the canary must have all of them
            await until(lambda: bool(seen) and seen[-1] == published[-1])
            nursery.cancel_scope.cancel()
        assert seen == published, "the canary lost or reordered messages"
        # no slot is held for the victim (admission reserves one until registration)
        assert d.clients.pending == 0 and sum(d.clients.per_ip.values()) == len(d.connections)
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        if victim is not None:
            await trio.aclose_forcefully(victim.stream)
        await canary.aclose()

    assert fault.fired >= 1 and fault.victim
    ours = [r for r in caplog.records if r.name.startswith("uipd") and r.levelno >= logging.WARNING]
    naming = [r for r in ours if fault.victim in r.getMessage()]
    assert len(naming) == 1, [r.getMessage() for r in ours]
    assert "127.0.0.1" in naming[0].getMessage()
    assert len(ours) == 1, [r.getMessage() for r in ours]


async def test_a_session_leaked_without_a_connection_is_removed_by_the_heartbeat(caplog):
    """Issue 12 item 3: a session left in the hub by a failed connect was pinged through a
    connection that did not exist, and its first heartbeat killed the daemon.  Whatever leaks one
    now, the heartbeat removes it once it is silent: one log line, and the others are untouched."""
    caplog.set_level(logging.WARNING)
    async with running_daemon({"heartbeat": {"interval": 0.2, "timeout": 5}}) as d:
        canary = await connect(d)
        leaked = d.hub.connect("leaked", now())
        leaked.last_alive -= 10  # silent for longer than the timeout: dead at the next tick
        await until(lambda: "leaked" not in d.hub.sessions)
        assert leaked.outbound.closing is not None
        await canary.barrier()  # still served
        assert list(d.hub.sessions) == list(d.connections)
        await canary.aclose()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("uipd") and r.levelno >= logging.WARNING]
    assert ours == ["client leaked: session without a connection; removing it"]
