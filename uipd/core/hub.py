"""The hub: the core's one entry point for the shell (docs/protocol.md sections 1-5).

Every decision about a client is taken in the core, synchronously, and the hub is where the
shell asks: what a client is sent on connect, what each frame-level event it reads means (a piece
of a text message, a binary message, a ping, a pong, a close), which clients a publication reaches,
when a client is pinged and when it is dead.  The shell carries the decisions out: it writes the
frames the sessions' queues hold, and closes or drops the connections the hub marks.

The hub composes the modules that own each job: :mod:`~uipd.core.sessions` (sessions and the
subscription index), :mod:`~uipd.core.dispatch` (client messages and the rate limit),
:mod:`~uipd.core.routing` (publications and the slow-consumer policy), :mod:`~uipd.core.liveness`
(heartbeat and credential expiry), :mod:`~uipd.core.counters`, :mod:`~uipd.core.closecodes`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field

from uipd.core import closecodes, liveness, wire
from uipd.core.assembly import CLOSES, MessageAssembler, Piece, over_limit
from uipd.core.clock import Instant
from uipd.core.counters import HubCounters
from uipd.core.dispatch import Dispatcher
from uipd.core.history import HistoryEntry
from uipd.core.liveness import HeartbeatPlan, HeartbeatSchedule, WritePing
from uipd.core.outbound import Delivery, OutboundQueue
from uipd.core.publish import Publication
from uipd.core.ratelimit import RateVerdict, TokenBucket
from uipd.core.recovery import HistoryReader, PendingRecovery, Position, Recoveries
from uipd.core.routing import PublishResult, Router
from uipd.core.sessions import Session, SubscriptionIndex
from uipd.core.settings import HubSettings
from uipd.core.subscriptions import ALL, SubscriptionSet
from uipd.core.topics import TopicTable

__all__ = ["Hub", "HubSettings", "PublishResult", "Session"]

CLOSING_PARSE_BYTES = 4096
"""Bytes of frames a closing connection may still parse looking for the peer's close frame."""


@define
class Hub:
    topics: TopicTable
    _settings: HubSettings = field(factory=HubSettings, alias="settings")
    rng: random.Random = field(factory=random.Random)
    sessions: dict[str, Session] = field(factory=dict)
    counters: HubCounters = field(factory=HubCounters)
    heartbeats: HeartbeatSchedule = field(factory=HeartbeatSchedule)
    """Every session's next heartbeat deadline (see :meth:`heartbeat`)."""
    index: SubscriptionIndex = field(init=False)
    router: Router = field(init=False)
    dispatch: Dispatcher = field(init=False)
    recoveries: Recoveries = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.index = SubscriptionIndex.of(self.topics.names)
        self.router = Router(self.topics, self.sessions, self.index, self.counters, self._settings.slow_consumer)
        self.recoveries = Recoveries(self.topics, self.counters, lambda: self._settings.max_replay)
        self.dispatch = Dispatcher(self.topics, self.index, self.router, self.counters, self._settings, self.recoveries)
        self._configure_history(self.topics.names)

    @property
    def history_reader(self) -> HistoryReader | None:
        """Where history this node lacks is read (the Redis broker); None: local history only."""
        return self.recoveries.reader

    @history_reader.setter
    def history_reader(self, reader: HistoryReader | None) -> None:
        self.recoveries.reader = reader

    def _configure_history(self, names: Iterable[str]) -> None:
        s = self._settings
        for name in names:
            self.topics.topics[name].history.configure(s.history_size, s.history_ttl, s.history_max_bytes)

    @property
    def settings(self) -> HubSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: HubSettings) -> None:
        """Every part of the hub reads the new settings from now on (see ``apply_settings``)."""
        self._settings = self.dispatch.settings = settings
        self.router.policy = settings.slow_consumer

    # -- connections ------------------------------------------------------------------------------

    def connect(
        self,
        client_id: str,
        now: Instant,
        wake: Callable[[], None] = lambda: None,
        *,
        allowed_topics: frozenset[str] | None = None,
        expires_in: float | None = None,
        topics: Iterable[str] | None = None,
        since: dict[str, Position] | None = None,
    ) -> Session:
        """Register a client; its queue then holds the ``connection`` message and its SNAPSHOT.

        ``allowed_topics`` restricts what it may subscribe to (its default set is cut down to
        them); ``expires_in`` is the seconds left on its credentials.  ``topics`` (the
        handshake's, checked by :func:`~uipd.core.recovery.parse_handshake_query`) is its first
        subscribe; with ``since`` the SNAPSHOT is the recovery answer (PROTOCOL.md section 8)."""
        s = self._settings
        if topics is not None:
            subscriptions = SubscriptionSet(set(topics), explicit=True)
        else:
            default = frozenset(s.default_topics)
            if allowed_topics is not None:
                offered = [t for t in self.topics.names if t in allowed_topics]
                default = frozenset(offered) if ALL in default else default & allowed_topics
            subscriptions = SubscriptionSet.default(default)
        session = Session(
            id=client_id,
            subscriptions=subscriptions,
            outbound=OutboundQueue(s.max_queue_bytes, wake),
            rate=TokenBucket.start(s.rate_limit, s.rate_burst, s.rate_limit_strikes, now.mono),
            last_alive=now.mono,
            next_ping_at=liveness.first_ping_at(now.mono, s.heartbeat_interval, self.rng),
            allowed_topics=allowed_topics,
            expires_at=None if expires_in is None else now.mono + expires_in,
        )
        # Atomic: both frames are built before the client is registered anywhere, so a connect
        # that raises (a SNAPSHOT that cannot be built, a default topic the table lacks) leaves
        # nothing behind, and the shell's connection is woken only by a session that exists.
        names = session.subscriptions.effective(self.topics.names)
        offered = [t for t in self.topics.names if session.may_receive(t)]
        hello = wire.connection_frame(s.welcome, now.iso, round(s.heartbeat_interval * 1000), client_id, offered)
        snapshot = None if since is not None else self.topics.snapshot_frame(names, now.mono, now.iso)
        try:
            self.index.add(session)
        except Exception:
            self.index.remove(session)
            raise
        self.sessions[client_id] = session
        self.heartbeats.add(session, s.heartbeat_timeout)
        self.counters.connections += 1
        self.router.reply(session, hello)
        if snapshot is not None:
            self.router.reply(session, snapshot, Delivery.SNAPSHOT)
        else:
            assert since is not None
            wanted = set(names)
            mine = {t: pos for t, pos in since.items() if t in wanted}
            self.recoveries.respond(session, mine, [t for t in names if t not in mine], now)
        return session

    def complete_recovery(
        self, pending: PendingRecovery, fetched: dict[str, list[HistoryEntry] | None], now: Instant
    ) -> None:
        """The history a :class:`PendingRecovery` waited for (None for a topic: it could not be
        read): its answer goes where the client's queue was held.  A client gone meanwhile: nothing."""
        session = pending.session
        if self.sessions.get(session.id) is not session:
            return
        self.recoveries.complete(pending, fetched, now)

    def reply(self, session: Session, frame: bytes, kind: Delivery = Delivery.RELIABLE) -> None:
        """Queue a reply to the client; one that does not fit is a slow consumer's."""
        self.router.reply(session, frame, kind)

    def disconnect(self, session: Session) -> None:
        self.index.remove(session)
        self.heartbeats.remove(session)
        if self.sessions.pop(session.id, None) is not None:
            self.counters.dropped_updates += session.outbound.dropped_updates

    # -- what a client sends: the frame layer's events --------------------------------------------

    def receive_piece(self, session: Session, piece: str, frame_finished: bool, message_finished: bool, now: Instant) -> None:
        """Handle one piece of a client text message, as the frame layer decoded it (a frame, or
        the part of one that has arrived).  A message in one piece is handled at once; the pieces
        of any other are gathered in the session's :class:`MessageAssembler`, bounded in bytes
        and frames (close 1009), and each frame that ends without ending the message takes a
        token from the rate limit like a message: an endless fragment stream is throttled, then
        closed 1008."""
        if session.outbound.closing is not None:
            return  # a closing connection reads only to reach the peer's close
        s = self._settings
        assembly = session.assembly
        if assembly is None:
            if message_finished:
                if over_limit(piece, s.max_message_bytes):
                    too_big = closecodes.MESSAGE_TOO_BIG
                    session.outbound.request_close(too_big.code, too_big.reason, flush=False)
                else:
                    self.dispatch.receive(session, piece, now)
                return
            assembly = session.assembly = MessageAssembler(s.max_message_bytes, s.max_fragments)
        verdict = assembly.feed(piece, frame_finished, message_finished)
        if verdict is Piece.PARTIAL:
            return
        if verdict is Piece.FRAGMENT:
            self.dispatch.rate_check(session, now.mono, now)
            return
        session.assembly = None
        if verdict is Piece.COMPLETE:
            self.dispatch.receive(session, assembly.text(), now)
        else:
            close = CLOSES[verdict]
            session.outbound.request_close(close.code, close.reason, flush=False)

    def receive(self, session: Session, text: str, now: Instant) -> None:
        """Handle one whole client text message; replies and closes are queued on the session."""
        self.dispatch.receive(session, text, now)

    def receive_binary(self, session: Session) -> None:
        """A binary message, at its first bytes: closed 1003 (uipd speaks text), never read to its
        end; what is queued for the client goes out first."""
        binary = closecodes.BINARY
        session.outbound.request_close(binary.code, binary.reason, flush=True)

    def peer_close(self, session: Session, code: int, reason: str, *, violation: bool) -> bool:
        """The frame layer's close: the peer's close frame, to be answered with its code after a
        frame in flight, or (``violation``) a frame that broke RFC 6455, closed with the frame
        layer's 1002/1007.  True: parse nothing more (after a violation the bytes that follow are
        not frames)."""
        default = closecodes.PROTOCOL_ERROR.reason if violation else ""
        session.outbound.request_close(code, reason or default, flush=False)
        return violation

    def keep_parsing(self, session: Session, size: int) -> bool:
        """Whether ``size`` more bytes from a closing client are to be parsed.  A closing
        connection parses only to reach the peer's close frame, and no more than
        CLOSING_PARSE_BYTES: a client that floods past our close (pings, fragments) kept the
        receive loop parsing for close_timeout, which stalled every other client.  False: read
        the rest and drop it unparsed."""
        if session.outbound.closing is None:
            return True
        if session.parsed_while_closing >= CLOSING_PARSE_BYTES:
            return False
        session.parsed_while_closing += size
        return True

    def ping(self, session: Session, pong: bytes, now: float) -> None:
        """A WebSocket ping from the client, to be answered with ``pong`` (the shell frames it).

        It takes a token from the client's rate limit like a message; one over the limit is not
        answered (a control frame gets no ERROR message), and a flood is closed 1008.  The pong
        counts against the queue bound, and at most one waits in the queue (``Delivery.PONG``)."""
        if session.outbound.closing is None and self.dispatch.rate_check(session, now, None) is RateVerdict.OK:
            self.router.reply(session, pong, Delivery.PONG)

    def pong(self, session: Session, now: float) -> None:
        """A WebSocket pong from the client (the answer to our ping, or unsolicited): a sign of
        life.  It takes a token from the rate limit like a ping; one over the limit is ignored,
        and a flood of them is closed 1008."""
        if self.dispatch.rate_check(session, now, None) is RateVerdict.OK:
            session.last_alive = now

    # -- publishing and cluster state -------------------------------------------------------------

    def publish(self, pub: Publication, now: Instant, *, seq: int | None = None) -> PublishResult:
        """Apply a publication to topic state and queue it for its recipients (see
        :meth:`Router.publish`); ``seq`` is the cluster's when it assigned one."""
        return self.router.publish(pub, now, seq)

    def load_topic(self, name: str, entities: Iterable[tuple[str, Any]], seq: int, *, epoch: str | None = None) -> None:
        """Replace a topic's state, seq and (given) epoch (a node loading the cluster's state);
        clients are not told here: see ``resync_all``.  Its history is kept only if it still
        leads up to ``seq`` under the same epoch."""
        state = self.topics.topics[name]
        state.entities.clear()
        self.topics.apply(name, entities, ())
        if (epoch is not None and epoch != state.epoch) or state.history.last_seq != seq:
            state.history.clear()
        if epoch is not None:
            state.epoch = epoch
        self.topics.record(state, seq, None, False, 0.0)

    def resync_all(self) -> int:
        return self.router.resync_all()

    def take_resync(self, session: Session, now: Instant) -> bool:
        return self.router.take_resync(session, now)

    # -- liveness and shutdown --------------------------------------------------------------------

    def heartbeat(self, now: Instant, write_ping: WritePing | None = None) -> HeartbeatPlan:
        """Ping the sessions that are due (``write_ping``: the shell's direct write, tried first;
        else the ping is queued); which sessions are dead (see :meth:`liveness.HeartbeatSchedule.run`:
        the cost is the sessions due, not all of them)."""
        return self.heartbeats.run(now, self._settings, self.sessions, self.counters, write_ping)

    def close_all(self, code: int = closecodes.GOING_AWAY.code, reason: str = closecodes.GOING_AWAY.reason) -> None:
        for session in self.sessions.values():
            session.outbound.request_close(code, reason, flush=True)

    # -- reading and reconfiguring ----------------------------------------------------------------

    def subscriber_count(self, topic: str) -> int:
        return self.index.count(topic)

    def dropped_updates(self) -> int:
        """UPDATEs dropped since start for slow consumers (superseded by their resync SNAPSHOT)."""
        return self.counters.dropped_updates + sum(s.outbound.dropped_updates for s in list(self.sessions.values()))

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.sessions),
            "topics": {
                name: {
                    "subscribers": self.subscriber_count(name),
                    "entities": len(state.entities),
                    "seq": state.seq,
                    "epoch": state.epoch,
                    "history": state.history.messages,
                    "historyBytes": state.history.bytes,
                }
                for name, state in self.topics.topics.items()
            },
        }

    def add_topics(self, names: Iterable[str]) -> list[str]:
        """Offer new topics (a config reload added a source); returns those that were new.
        Clients holding ``all`` receive them from now on."""
        added = [name for name in names if self.topics.add(name)]
        for name in added:
            self.index.add_topic(name)
        self._configure_history(added)
        return added

    def apply_settings(self, settings: HubSettings) -> None:
        """New settings (a config reload).  Clients that connect later take all of them from
        ``self.settings``; clients connected now get those each of them holds a copy of (the queue
        bound, the message rate limit), or a reload would not reach a long-lived client at all."""
        self.settings = settings
        self._configure_history(self.topics.names)
        for session in self.sessions.values():
            session.outbound.max_bytes = settings.max_queue_bytes
            bucket = session.rate
            bucket.rate, bucket.burst, bucket.strikes_allowed = settings.rate_limit, settings.rate_burst, settings.rate_limit_strikes
            bucket.tokens = min(bucket.tokens, bucket.burst)  # a smaller bucket holds no more than it fits
