"""UipdClient: one logical connection to a uipd daemon that survives reconnects, for trio.

::

    async with open_client("ws://localhost:5000/", topics=["accidents"]) as client:
        async for event in client.events():
            if event.kind == "alert":
                print(event.topic, event.message["data"])
            print(len(client.state("accidents")), "open accidents")

The client keeps the topic state (SNAPSHOT replaces the topics it carries, UPDATE upserts by id and
deletes ``removed``) and each topic's position (docs/protocol.md section 8: messages are applied in
seq order, duplicates dropped, a gap asked again with ``since``), reconnects with ``topics`` and
``since`` on the handshake so that the server replays what was missed (``recovered`` and
``alerts_lost`` events say how it went), restores its subscriptions after every reconnect, reconnects with jittered
exponential backoff, and drops a link on which nothing (not even the PONG of its own ``ping``
action) arrived for two advertised heartbeat intervals. It offers permessage-deflate (``compress=False``:
not; :mod:`uipd.client.link`). A refusal (HTTP 4xx on the handshake, close
4001/4003/1008-auth) is not retried: :class:`Refused` is raised from the ``async with``.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
from attrs import define, frozen

from uipd.client.link import Closed, HandshakeFailed, Link, Rejected, open_link
from uipd.client.policy import reconnect_backoff, should_retry
from uipd.client.positions import Position, Positions, recovery_url
from uipd.client.state import Entity, TopicState
from uipd.core.backoff import Backoff

log = logging.getLogger(__name__)

ALL = "all"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message a link takes (after inflating): a busy city's snapshot is several MiB."""
Status = Literal["idle", "connecting", "open", "reconnecting", "closed"]
EventKind = Literal["connected", "snapshot", "update", "alert", "subscribed", "error", "disconnected", "recovered", "alerts_lost"]


@frozen
class Event:
    """Something that happened. ``message`` is the server's message as received (for
    ``disconnected``: ``{"code", "reason", "delay"}``; for ``recovered`` and ``alerts_lost``, after
    the SNAPSHOT that said so: ``{"topics": [...]}``, alerts may have been missed for the latter; a
    ``subscribed`` for the set named on the handshake URL is made by the client, the server sends no
    SUBSCRIBED for it)."""

    kind: EventKind
    topic: str | None
    message: dict[str, Any]


class Refused(Exception):
    """The daemon refused the client (auth, unknown path): retrying cannot help."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.http_status = code, http_status


class Unreachable(Exception):
    """The first connection failed and ``retry_first=False``: raised ``from`` the failure."""


@define
class _Lost:
    code: int | None = None
    reason: str = ""
    http_status: int | None = None
    error: BaseException | None = None


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
        retry_first: bool = True,
        compress: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = _with_token(url, token)
        # Offer permessage-deflate (PROTOCOL.md section 9): the city snapshot arrives ~9x smaller.
        self.compress = compress
        self.ssl_context = ssl_context  # wss:// with a CA of one's own (None: the system's)
        self.compressed = False  # the current link negotiated permessage-deflate
        self.reconnect = reconnect
        self.retry_first = retry_first  # False: a daemon unreachable at the start is an error
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
        self._positions = Positions()
        # How this connection was opened: with topics/since on its URL (the server restored the
        # set and recovers), and the subscribe to send once open when not every position fit.
        self._recovering = False
        self._later: dict[str, Any] | None = None
        # A server that refused topics=/since= (HTTP 400, 403) gets a plain handshake next, and
        # `since` in a subscribe once open: the connect SNAPSHOT's sections of those topics are
        # skipped, the answer to the subscribe brings them.
        self._plain_next = False
        self._since_after_open: dict[str, Any] | None = None
        self._skip_sections: set[str] | None = None
        self._url_topics: list[str] | None = None
        self._ever_open = False
        self._ws: Link | None = None
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

    def position(self, topic: str) -> Position | None:
        """The last position applied for a topic, or None when the server sent none."""
        p = self._positions.get(topic)
        return Position(p.seq, p.epoch) if p is not None else None

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
        except Closed:
            return False
        return True

    # -- the connection loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect until cancelled or refused."""
        try:
            while True:
                self.status = "connecting"
                lost = await self._connect_once()
                if lost.http_status in (400, 403) and self._recovering:
                    # Refused our topics=/since= (a topic gone after a restart, `all` outside a JWT
                    # claim): once more without them; a refusal of the client itself comes again.
                    self._plain_next, lost.http_status = True, None
                if not self._ever_open and not self.retry_first and lost.http_status is None and lost.error is not None:
                    raise Unreachable(f"{self.url}: {lost.reason}") from lost.error
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
            async with open_link(
                self._open_url(), compress=self.compress, connect_timeout=self.connect_timeout, close_timeout=1.0,
                max_message_size=MAX_MESSAGE_BYTES, ssl_context=self.ssl_context,
            ) as ws:
                self._ws, self.compressed = ws, ws.compressed
                # Neither task lets an exception out (a nursery would wrap it in a group): each
                # records why the link ended in `lost` and cancels the other.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch, ws, nursery.cancel_scope, lost)
                    await self._read(ws, nursery.cancel_scope, lost)
        except Rejected as exc:
            lost.http_status = exc.status_code
        except Closed as exc:
            lost.code, lost.reason = exc.code, exc.reason
        except (HandshakeFailed, OSError, trio.BrokenResourceError) as exc:
            lost.code, lost.reason = lost.code or 1006, lost.reason or f"{type(exc).__name__}: {exc}"
            lost.error = exc
        finally:
            self._ws, self.compressed = None, False
            self._opened = trio.Event() if self._opened.is_set() else self._opened
        if lost.code is None and lost.http_status is None:
            lost.code = 1006
        return lost

    async def _read(self, ws: Link, scope: trio.CancelScope, lost: _Lost) -> None:
        while True:
            try:
                text = await ws.get_message()
            except Closed as exc:
                lost.code, lost.reason = exc.code, exc.reason
                scope.cancel()
                return
            self._last_seen = trio.current_time()
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if isinstance(message, dict):
                await self._handle(message)

    async def _watch(self, ws: Link, scope: trio.CancelScope, lost: _Lost) -> None:
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
            self._ever_open = True
            self.backoff.reset()
            self.client_id = msg.get("clientId")
            self.topics = list(msg.get("topics") or [])
            # topics= on the URL is the connection's first subscribe; no SUBSCRIBED confirms it
            self.subscriptions = sorted(set(self._url_topics)) if self._url_topics is not None else None
            hb = msg.get("heartbeatInterval")
            if isinstance(hb, (int, float)) and math.isfinite(hb) and hb > 0:
                self.heartbeat_interval = hb / 1000
            self._state.retain(lambda t: t in self.topics)  # a restarted daemon may offer less
            self._positions.retain(lambda t: t in self.topics)
            self.status = "open"
            later, self._later = self._later, None
            since, self._since_after_open = self._since_after_open, None
            if later is not None:
                await self._send(later)
            elif since is not None:
                await self._recover_after_open(since)
            elif self._wanted is not None and not self._recovering:
                await self._restore_subscriptions()
            self._opened.set()
            await self._emit("connected", None, msg)
        elif kind == "SNAPSHOT":
            await self._on_snapshot(msg)
        elif kind == "UPDATE":
            decision = self._positions.message(msg)
            if decision.apply:
                self._state.apply_update(msg.get("topic", ""), msg.get("data") or [], msg.get("removed"))
                await self._emit("update", msg.get("topic"), msg)
            if decision.ask:
                await self._ask_again(msg["topic"])
        elif kind == "ALERT":
            decision = self._positions.message(msg)
            if decision.emit:
                await self._emit("alert", msg.get("topic"), msg)
            if decision.ask:
                await self._ask_again(msg["topic"])
        elif kind == "SUBSCRIBED":
            self.subscriptions = list(msg.get("topics") or [])
            await self._emit("subscribed", None, msg)
        elif kind == "ERROR":
            error = msg.get("error") or {}
            if error.get("code") == "unknown_topic" and self._wanted is not None:
                self._wanted -= set(error.get("topics") or [])  # or it is re-sent on every reconnect
            # An ask that was refused (rate_limited, ...) is not coming: the next gap asks again.
            self._positions.ask_failed(error.get("topics"))
            await self._emit("error", None, msg)

    async def _on_snapshot(self, msg: dict[str, Any]) -> None:
        skip, self._skip_sections = self._skip_sections, None
        if skip:
            msg = {**msg, **{k: _without(msg[k], skip) for k in ("data", "positions") if isinstance(msg.get(k), dict)}}
        answer = self._positions.snapshot(msg)
        self._state.apply_snapshot(msg.get("data") or {})
        if self._recovering and self._wanted is not None and "positions" not in msg:
            # A server before version 1.1 ignored topics= on the URL: restore the set as it expects.
            self._recovering = False
            await self._restore_subscriptions()
        self._prune()
        await self._emit("snapshot", None, msg)
        if self._url_topics is not None and self._recovering:
            # The set named on the URL is in force (the connect SNAPSHOT is its answer): said
            # once, as a SUBSCRIBED reply would have said it.
            self._url_topics = None
            await self._emit("subscribed", None, {"type": "SUBSCRIBED", "topics": self.subscriptions, "timestamp": msg.get("timestamp")})
        for alert in answer.alerts:
            await self._emit("alert", alert.get("topic"), alert)
        if answer.recovered:
            await self._emit("recovered", None, {"topics": answer.recovered})
        if answer.alerts_lost:
            await self._emit("alerts_lost", None, {"topics": answer.alerts_lost})

    async def _ask_again(self, topic: str) -> None:
        """Messages of a topic were lost on the way: ask the server for them (section 8)."""
        since = self._positions.since_of(topic)
        if since is None:
            return
        # The first subscribe of a connection replaces the server's default set: a client that
        # never chose a set names the one the server gave it, so the ask adds and drops nothing.
        topics = self._positions.topics() if self._wanted is None else [ALL] if ALL in self._wanted else [topic]
        await self._send({"action": "subscribe", "topics": topics, "since": since})

    async def _recover_after_open(self, since: dict[str, Any]) -> None:
        """The plain-handshake fallback: the subscribe that restores the set and asks for the positions."""
        since = {t: p for t, p in since.items() if t in self.topics}
        wanted = self._wanted
        topics = list(since) if wanted is None else sorted(t for t in wanted if t == ALL or t in self.topics)
        if not since or not topics:
            if wanted is not None:
                await self._restore_subscriptions()
            return
        self._skip_sections = set(since)
        self._positions.asking(since)
        await self._send({"action": "subscribe", "topics": topics, "since": since, "snapshot": True})

    async def _restore_subscriptions(self) -> None:
        # The first subscribe of a connection replaces the default set: this restores ours.
        assert self._wanted is not None
        topics = sorted(t for t in self._wanted if t == ALL or t in self.topics)
        await self._send({"action": "subscribe", "topics": topics, "snapshot": True})

    def _open_url(self) -> str:
        """The next handshake's URL: with the set, and the positions to recover once there are some."""
        wanted = self._wanted
        self._positions.new_connection()
        since = self._positions.since(lambda t: wanted is None or ALL in wanted or t in wanted)
        topics = None if wanted is None else sorted(t for t in wanted if t == ALL or not self.topics or t in self.topics)
        self._later = None
        # Also the first connection names its set on the URL: one SNAPSHOT of those topics, rather
        # than one of the server's default set and then one of ours.
        positioned = (bool(since) or topics is not None) and (topics is None or bool(topics))
        self._recovering = positioned and not self._plain_next
        self._since_after_open = since if positioned and self._plain_next else None
        self._plain_next = False
        self._url_topics = topics if self._recovering else None
        if not self._recovering:
            return self.url
        url, self._later = recovery_url(self.url, topics, since)
        return url

    def _prune(self) -> None:
        wanted = self._wanted
        if wanted is not None and ALL not in wanted:
            self._positions.retain(lambda t: t in wanted)
            self._state.retain(lambda t: t in wanted)

    async def _emit(self, kind: EventKind, topic: str | None, message: dict[str, Any]) -> None:
        if self._events_on:
            await self._event_send.send(Event(kind, topic, message))


def _without(obj: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in skip}


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
    refuses the client, :class:`Unreachable` if it cannot be reached at the start and
    ``retry_first=False``."""
    client = UipdClient(url, **options)
    refused: list[Refused | Unreachable] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            try:
                await client.run()
            except (Refused, Unreachable) as exc:  # raised below, as itself rather than inside an ExceptionGroup
                refused.append(exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
    if refused:
        raise refused[0]
