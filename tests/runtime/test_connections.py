"""ConnectionRegistry (uipd.runtime.connections) on its own: the slots of admitted handshakes,
per-address counts, registration and the drain, without sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from uipd.config import from_dict
from uipd.core import closecodes
from uipd.core.hub import Hub
from uipd.core.topics import TopicTable
from uipd.runtime.auth import Identity, make_authenticator
from uipd.runtime.connections import ConnectionRegistry
from uipd.runtime.settings import hub_settings
from uipd.server.flusher import Flusher

HEADERS = {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}


def registry(**server: Any) -> ConnectionRegistry:
    config = from_dict({"server": server, "auth": {"mode": "token", "tokens": ["tok"]}})
    hub = Hub(TopicTable.of([]), hub_settings(config))
    return ConnectionRegistry(hub, Flusher(), config.server, make_authenticator(config.auth))


class FakeConnection(SimpleNamespace):
    """What register reads of a ClientConnection: its session's id and outbound queue, its address."""

    def __init__(self, key: str, remote: str) -> None:
        closes: list[tuple[int, str]] = []
        outbound = SimpleNamespace(request_close=lambda code, reason, flush: closes.append((code, reason)))
        super().__init__(session=SimpleNamespace(id=key, outbound=outbound), remote=remote, closes=closes)


def admit(r: ConnectionRegistry, ip: str, token: str = "tok") -> Any:
    return r.admit(f"/?token={token}", HEADERS, ip)


async def test_an_admitted_handshake_holds_its_slot_until_registered_or_released():
    r = registry(max_clients=2, max_connections_per_ip=1)
    assert isinstance(admit(r, "10.0.0.1"), Identity)
    assert r.pending == 1 and r.per_ip == {"10.0.0.1": 1}
    # not registered yet, and still counted: per address, then in total
    assert admit(r, "10.0.0.1").reason == "too_many_per_ip"
    assert isinstance(admit(r, "10.0.0.2"), Identity)
    assert admit(r, "10.0.0.3").reason == "too_many_clients"
    r.release("10.0.0.2")
    assert r.pending == 1 and r.per_ip == {"10.0.0.1": 1}  # a count of 0 is not kept
    unregister = r.register(FakeConnection("a", "10.0.0.1"))  # type: ignore[arg-type]
    assert r.pending == 0 and list(r.connections) == ["a"] and r.per_ip == {"10.0.0.1": 1}
    unregister()
    assert r.connections == {} and r.per_ip == {}


async def test_a_bad_token_is_refused_unauthorized_and_takes_no_slot():
    r = registry()
    assert admit(r, "10.0.0.1", token="wrong").reason == "unauthorized"
    assert r.pending == 0 and r.per_ip == {}


async def test_a_reload_changes_the_checks_of_the_next_handshakes():
    r = registry(max_connections_per_ip=1)
    admit(r, "10.0.0.1")
    other = from_dict({"server": {"max_connections_per_ip": 2}, "auth": {"mode": "token", "tokens": ["new"]}})
    r.configure(other.server, make_authenticator(other.auth))
    assert admit(r, "10.0.0.1").reason == "unauthorized"  # the old token no longer opens it
    assert isinstance(admit(r, "10.0.0.1", token="new"), Identity)


async def test_draining_refuses_handshakes_closes_late_registrations_and_ends_with_the_last_connection():
    r = registry()
    admit(r, "10.0.0.1")
    admit(r, "10.0.0.2")
    first = r.register(FakeConnection("a", "10.0.0.1"))  # type: ignore[arg-type]
    r.start_draining()
    assert admit(r, "10.0.0.3").reason == "shutting_down"
    late = FakeConnection("b", "10.0.0.2")
    second = r.register(late)  # type: ignore[arg-type]
    assert late.closes == [(closecodes.GOING_AWAY.code, closecodes.GOING_AWAY.reason)]
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def drain() -> None:
            await r.drained()
            done.set()

        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        first()
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # one connection is still open
        second()
        with trio.fail_after(1):
            await done.wait()


async def test_drained_returns_at_once_without_connections():
    r = registry()
    r.start_draining()
    with trio.fail_after(1):
        await r.drained()
