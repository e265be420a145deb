"""UipdClient: one logical connection to a uipd daemon that survives reconnects, for trio.

::

    async with open_client("ws://localhost:5000/", topics=["accidents"]) as client:
        async for event in client.events():
            if event.kind == "alert":
                print(event.topic, event.message["data"])
            print(len(client.state("accidents")), "open accidents")

The client keeps the topic state (SNAPSHOT replaces the topics it carries, UPDATE upserts by id and
deletes ``removed``), restores its subscriptions after every reconnect, reconnects with jittered
exponential backoff, and drops a link on which nothing (not even the PONG of its own ``ping``
action) arrived for two advertised heartbeat intervals. A refusal (HTTP 4xx on the handshake, close
4001/4003/1008-auth) is not retried: :class:`Refused` is raised from the ``async with``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
from attrs import define, frozen
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url

from uipd.client.policy import reconnect_backoff, should_retry
from uipd.client.state import Entity, TopicState
from uipd.core.backoff import Backoff

log = logging.getLogger(__name__)

ALL = "all"
Status = Literal["idle", "connecting", "open", "reconnecting", "closed"]
EventKind = Literal["connected", "snapshot", "update", "alert", "subscribed", "error", "disconnected"]


@frozen
class Event:
    """Something that happened. ``message`` is the server's message as received (for
    ``disconnected``: ``{"code", "reason", "delay"}``)."""

    kind: EventKind
    topic: str | None
    message: dict[str, Any]


class Refused(Exception):
    """The daemon refused the client (auth, unknown path): retrying cannot help."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.http_status = code, http_status


@define
class _Lost:
    code: int | None = None
    reason: str = ""
    http_status: int | None = None


class UipdClient:
    """Use :func:`open_client`; the constructor does not connect."""

    def __init__(
        self,
        url: str,
        *,
        topics: Iterable[str] | None = None,
        token: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        dead_after: float = 2.0,
        event_buffer: int = 1024,
    ) -> None:
        self.url = _with_token(url, token)
        self.reconnect = reconnect
        self.backoff = backoff or reconnect_backoff()
        self.connect_timeout = connect_timeout
        self.dead_after = dead_after
        self.status: Status = "idle"
        self.client_id: str | None = None
        self.topics: list[str] = []  # every topic the server offers
        self.subscriptions: list[str] | None = None  # the set the server confirmed last
        self.heartbeat_interval: float = 10.0  # seconds; the server's value once connected
        self._wanted: set[str] | None = set(topics) if topics is not None else None  # None: server default
        self._state = TopicState()
        self._ws: WebSocketConnection | None = None
        self._opened = trio.Event()
        # Events are delivered with backpressure: a program that stops reading them stops the
        # reader too, and the daemon's slow-consumer policy (resync) takes over. event_buffer=0
        # turns events off for a program that only reads state().
        self._events_on = event_buffer > 0
        self._event_send, self._event_receive = trio.open_memory_channel[Event](max(event_buffer, 0))

    # -- reading --------------------------------------------------------------------------------

    def state(self, topic: str) -> Mapping[str, Entity]:
        """The entities of a topic by id (read-only; empty when none)."""
        return self._state.get(topic)

    def state_topics(self) -> list[str]:
        return self._state.topics()

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order; ends when the client is closed."""
        async for event in self._event_receive:
            yield event

    async def wait_open(self) -> None:
        """Until the client is connected (the server's ``connection`` message arrived)."""
        await self._opened.wait()

    # -- requests -------------------------------------------------------------------------------

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Add topics (the first subscribe replaces the server's default set); their state follows."""
        topics = list(topics)
        self._wanted = (self._wanted or set()) | set(topics)
        self._prune()  # leaving the default set `all` drops the topics not named
        await self._send({"action": "subscribe", "topics": topics, "snapshot": True})

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        """Remove topics; their state is forgotten at once."""
        topics = list(topics)
        wanted = set(self._wanted) if self._wanted is not None else {ALL}
        if ALL in wanted and any(t != ALL for t in topics):
            # Mirror the server: `all` minus a topic becomes every current topic but that one.
            wanted = (wanted - {ALL}) | set(self.topics)
        self._wanted = wanted - set(topics)
        self._prune()
        await self._send({"action": "unsubscribe", "topics": topics})

    async def request_snapshot(self, topics: Iterable[str] | None = None) -> None:
        await self._send({"action": "snapshot"} if topics is None else {"action": "snapshot", "topics": list(topics)})

    async def _send(self, message: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None or self.status != "open":
            return False  # sent on the next connection from self._wanted
        try:
            await ws.send_message(json.dumps(message))
        except ConnectionClosed:
            return False
        return True

    # -- the connection loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect until cancelled or refused."""
        try:
            while True:
                self.status = "connecting"
                lost = await self._connect_once()
                if not should_retry(code=lost.code, reason=lost.reason, http_status=lost.http_status):
                    what = f"HTTP {lost.http_status}" if lost.http_status else f"close {lost.code} {lost.reason}".strip()
                    raise Refused(f"{self.url}: refused ({what})", code=lost.code, http_status=lost.http_status)
                if not self.reconnect:
                    await self._emit("disconnected", None, {"code": lost.code, "reason": lost.reason, "delay": None})
                    return
                delay = self.backoff.next()
                self.status = "reconnecting"
                log.info("uipd client: connection lost (%s %s); reconnecting in %.2f s", lost.code, lost.reason, delay)
                await self._emit("disconnected", None, {"code": lost.code, "reason": lost.reason, "delay": delay})
                await trio.sleep(delay)
        finally:
            self.status = "closed"
            self._ws = None
            self._event_send.close()

    async def _connect_once(self) -> _Lost:
        lost = _Lost()
        try:
            # Snapshots of a busy city exceed trio-websocket's 1 MiB default message size.
            async with open_websocket_url(
                self.url, connect_timeout=self.connect_timeout, disconnect_timeout=1.0, max_message_size=64 * 1024 * 1024
            ) as ws:
                self._ws = ws
                # Neither task lets an exception out (a nursery would wrap it in a group): each
                # records why the link ended in `lost` and cancels the other.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch, ws, nursery.cancel_scope, lost)
                    await self._read(ws, nursery.cancel_scope, lost)
        except ConnectionRejected as exc:
            lost.http_status = exc.status_code
        except ConnectionClosed as exc:
            lost.code, lost.reason = exc.reason.code, exc.reason.reason or ""
        except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
            lost.code, lost.reason = lost.code or 1006, lost.reason or f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
            self._opened = trio.Event() if self._opened.is_set() else self._opened
        if lost.code is None and lost.http_status is None:
            lost.code = 1006
        return lost

    async def _read(self, ws: WebSocketConnection, scope: trio.CancelScope, lost: _Lost) -> None:
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed as exc:
                lost.code, lost.reason = exc.reason.code, exc.reason.reason or ""
                scope.cancel()
                return
            self._last_seen = trio.current_time()
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if isinstance(message, dict):
                await self._handle(message)

    async def _watch(self, ws: WebSocketConnection, scope: trio.CancelScope, lost: _Lost) -> None:
        """Connect timeout until the ``connection`` message; then dead-link detection."""
        self._last_seen = trio.current_time()
        with trio.move_on_after(self.connect_timeout) as timeout:
            await self._opened.wait()
        if timeout.cancelled_caught:
            lost.code, lost.reason = 4000, "connect timeout"
            scope.cancel()
            return
        interval = self.heartbeat_interval
        last_ping = trio.current_time()
        while True:
            await trio.sleep(interval / 4)
            now = trio.current_time()
            if now - self._last_seen >= self.dead_after * interval:
                lost.code, lost.reason = 4000, "heartbeat timeout"
                scope.cancel()
                return
            if now - self._last_seen >= interval and now - last_ping >= interval:
                last_ping = now  # quiet link: probe it; the PONG counts as a sign of life
                await self._send({"action": "ping"})

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "connection":
            self.backoff.reset()
            self.client_id = msg.get("clientId")
            self.topics = list(msg.get("topics") or [])
            self.subscriptions = None
            hb = msg.get("heartbeatInterval")
            if isinstance(hb, (int, float)) and math.isfinite(hb) and hb > 0:
                self.heartbeat_interval = hb / 1000
            self._state.retain(lambda t: t in self.topics)  # a restarted daemon may offer less
            self.status = "open"
            if self._wanted is not None:
                # The first subscribe of a connection replaces the default set: this restores ours.
                topics = sorted(t for t in self._wanted if t == ALL or t in self.topics)
                await self._send({"action": "subscribe", "topics": topics, "snapshot": True})
            self._opened.set()
            await self._emit("connected", None, msg)
        elif kind == "SNAPSHOT":
            self._state.apply_snapshot(msg.get("data") or {})
            self._prune()
            await self._emit("snapshot", None, msg)
        elif kind == "UPDATE":
            self._state.apply_update(msg.get("topic", ""), msg.get("data") or [], msg.get("removed"))
            await self._emit("update", msg.get("topic"), msg)
        elif kind == "ALERT":
            await self._emit("alert", msg.get("topic"), msg)
        elif kind == "SUBSCRIBED":
            self.subscriptions = list(msg.get("topics") or [])
            await self._emit("subscribed", None, msg)
        elif kind == "ERROR":
            error = msg.get("error") or {}
            if error.get("code") == "unknown_topic" and self._wanted is not None:
                self._wanted -= set(error.get("topics") or [])  # or it is re-sent on every reconnect
            await self._emit("error", None, msg)

    def _prune(self) -> None:
        wanted = self._wanted
        if wanted is not None and ALL not in wanted:
            self._state.retain(lambda t: t in wanted)

    async def _emit(self, kind: EventKind, topic: str | None, message: dict[str, Any]) -> None:
        if self._events_on:
            await self._event_send.send(Event(kind, topic, message))


def _with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit(parts._replace(query=query))


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[UipdClient]:
    """A connected-or-connecting :class:`UipdClient` for the body of the ``async with``; it is
    closed on exit. Options: see :class:`UipdClient`. Raises :class:`Refused` if the daemon
    refuses the client."""
    client = UipdClient(url, **options)
    refused: list[Refused] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            try:
                await client.run()
            except Refused as exc:  # raised below, as itself rather than inside an ExceptionGroup
                refused.append(exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
    if refused:
        raise refused[0]
