"""The hub: connected sessions, who is subscribed to what, and routing (PROTOCOL.md sections 1-5).

Every decision about a client is taken here, synchronously: what it is sent on connect, how its
messages are answered, which clients a publication reaches, what happens when one falls behind,
when it is pinged and when it is dead.  The shell carries the decisions out: it writes the frames
the sessions' queues hold, registers pings, and closes or drops connections the hub marks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, Literal

from attrs import Factory, define, field, frozen

from uipd.core import wire
from uipd.core.assembly import CLOSE_MESSAGE_TOO_BIG, CLOSE_REASONS, MessageAssembler, Piece, over_limit
from uipd.core.clock import Instant
from uipd.core.errors import ClientError, UnknownTopic
from uipd.core.messages import Ping, SnapshotRequest, Subscribe, Unsubscribe, parse_client_message
from uipd.core.outbound import Kind, Offer, OutboundQueue
from uipd.core.publish import Publication
from uipd.core.ratelimit import RateVerdict, TokenBucket
from uipd.core.subscriptions import ALL, SubscriptionSet
from uipd.core.topics import TopicTable

SlowConsumerPolicy = Literal["resync", "disconnect"]

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOKEN_EXPIRED = 4001


@frozen
class HubSettings:
    welcome: str = "Connected to HCMC Traffic Monitoring System"
    default_topics: tuple[str, ...] = (ALL,)
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    max_queue_bytes: int = 1024 * 1024
    slow_consumer: SlowConsumerPolicy = "resync"
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    rate_limit_strikes: int = 20
    max_subscriptions: int = 256
    max_message_bytes: int = 64 * 1024
    max_fragments: int = 128
    snapshot_budget_bytes: float = 128 * 1024
    """Bytes per second of requested SNAPSHOTs per client; 0: no budget."""
    snapshot_burst_bytes: float = 4 * 1024 * 1024


@define(eq=False)
class Session:
    """One connected client, as the core sees it."""

    id: str
    subscriptions: SubscriptionSet
    outbound: OutboundQueue
    rate: TokenBucket
    last_alive: float
    """Monotonic time of the last pong or ``ping`` action."""
    next_ping_at: float
    pings_sent: int = 0
    allowed_topics: frozenset[str] | None = None
    """The topics this client may subscribe to (a JWT ``topics`` claim); None: every topic."""
    expires_at: float | None = None
    """Monotonic time its credentials expire; it is closed 4001 then."""
    assembly: MessageAssembler | None = None
    """The fragmented message being received, if one is (made when it starts: idle clients hold none)."""
    snapshot_budget: TokenBucket | None = None
    """Bytes of requested SNAPSHOTs (made at the first request, full: as if made at connect)."""

    def may_receive(self, topic: str) -> bool:
        return self.allowed_topics is None or topic in self.allowed_topics


@frozen
class PublishResult:
    seq: int | None
    recipients: int


@frozen
class HeartbeatPlan:
    pings: list[tuple[Session, bytes]]
    """Sessions to ping now, with the ping payload (the shell watches for its pong)."""
    dead: list[Session]
    """Sessions whose last sign of life is older than the timeout: drop them."""
    failed: list[tuple[Session, Exception]] = Factory(list)
    """Sessions whose check raised (a bug), with the error: drop them."""


@define
class HubCounters:
    connections: int = 0
    published: int = 0
    broadcasts: int = 0
    deliveries: int = 0
    resyncs: int = 0
    slow_disconnects: int = 0
    heartbeat_drops: int = 0
    client_errors: int = 0
    rate_limit_closes: int = 0
    expired_closes: int = 0
    forbidden: int = 0
    subscription_limit: int = 0
    # For metrics (uipd.metrics reads these at scrape time); each moves at most once per publish
    # or per connection, never per delivery.
    published_by: Counter[tuple[str, str, bool]] = field(factory=Counter)
    """(topic, "UPDATE"|"ALERT", broadcast) -> publications; topic "" for a broadcast without one."""
    delivered_bytes: int = 0
    """Bytes of UPDATE/ALERT frames handed to clients' queues (frame size x recipients)."""
    slow_by_topic: Counter[tuple[str, str]] = field(factory=Counter)
    """(topic, "resync"|"disconnect") -> slow-consumer events caused by a publish on that topic."""
    closes: Counter[int] = field(factory=Counter)
    """Connections closed, by close code (1006: dropped without a close frame)."""
    handshake_timeouts: int = 0

    def count_publish(self, topic: str | None, kind: str, broadcast: bool, frame_bytes: int, recipients: int, slow_before: tuple[int, int]) -> None:
        """Once per publish: per-topic counts, and the slow-consumer events its fan-out caused."""
        self.published_by[(topic or "", kind, broadcast)] += 1
        self.delivered_bytes += frame_bytes * recipients
        if self.resyncs != slow_before[0]:
            self.slow_by_topic[(topic or "", "resync")] += self.resyncs - slow_before[0]
        if self.slow_disconnects != slow_before[1]:
            self.slow_by_topic[(topic or "", "disconnect")] += self.slow_disconnects - slow_before[1]

    def count_close(self, *reasons: Any) -> None:
        """Count a closed connection under the first known close code among ``reasons`` (objects
        with a ``code``, or None); 1006 when there is none."""
        self.closes[next((r.code for r in reasons if r is not None), 1006)] += 1


@define
class Hub:
    topics: TopicTable
    settings: HubSettings = field(factory=HubSettings)
    rng: random.Random = field(factory=random.Random)
    sessions: dict[str, Session] = field(factory=dict)
    counters: HubCounters = field(factory=HubCounters)
    _all_subscribers: set[Session] = field(factory=set)
    _topic_subscribers: dict[str, set[Session]] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._topic_subscribers = {name: set() for name in self.topics.names}

    # -- connections ------------------------------------------------------------------------------

    def connect(
        self,
        client_id: str,
        now: Instant,
        wake: Callable[[], None] = lambda: None,
        *,
        allowed_topics: frozenset[str] | None = None,
        expires_in: float | None = None,
    ) -> Session:
        """Register a client; its queue then holds the ``connection`` message and its SNAPSHOT.

        ``allowed_topics`` restricts what it may subscribe to (its default set is cut down to
        them); ``expires_in`` is the seconds left on its credentials."""
        s = self.settings
        default = set(s.default_topics)
        if allowed_topics is not None:
            offered = [t for t in self.topics.names if t in allowed_topics]
            default = set(offered) if ALL in default else default & allowed_topics
        session = Session(
            id=client_id,
            subscriptions=SubscriptionSet(default),
            outbound=OutboundQueue(s.max_queue_bytes, wake),
            rate=TokenBucket.start(s.rate_limit, s.rate_burst, s.rate_limit_strikes, now.mono),
            last_alive=now.mono,
            # The first ping of each client is spread over one interval, so that a mass
            # reconnect does not ping in lockstep.
            next_ping_at=now.mono + self.rng.uniform(0.0, s.heartbeat_interval),
            allowed_topics=allowed_topics,
            expires_at=None if expires_in is None else now.mono + expires_in,
        )
        # Atomic: both frames are built before the client is registered anywhere, so a connect
        # that raises (a SNAPSHOT that cannot be built, a default topic the table lacks) leaves
        # nothing behind, and the shell's connection is woken only by a session that exists.
        names = session.subscriptions.effective(self.topics.names)
        offered = [t for t in self.topics.names if session.may_receive(t)]
        hello = wire.connection_frame(s.welcome, now.iso, round(s.heartbeat_interval * 1000), client_id, offered)
        snapshot = self.topics.snapshot_frame(names, now.mono, now.iso)
        try:
            self._index(session)
        except Exception:
            self._unindex(session)
            raise
        self.sessions[client_id] = session
        self.counters.connections += 1
        self.reply(session, hello)
        self.reply(session, snapshot, Kind.SNAPSHOT)
        return session

    def reply(self, session: Session, frame: bytes, kind: Kind = Kind.CONTROL) -> None:
        """Queue a reply to the client; one that does not fit is a slow consumer's."""
        if session.outbound.offer(frame, kind) is Offer.OVERFLOW:
            self._slow_consumer(session, frame, kind)

    def disconnect(self, session: Session) -> None:
        self._unindex(session)
        self.sessions.pop(session.id, None)

    def _index(self, session: Session) -> None:
        if session.subscriptions.wants_all:
            self._all_subscribers.add(session)
            return
        for name in session.subscriptions.names:
            self._topic_subscribers[name].add(session)

    def _unindex(self, session: Session) -> None:
        self._all_subscribers.discard(session)
        for name in session.subscriptions.names:
            subscribers = self._topic_subscribers.get(name)
            if subscribers is not None:
                subscribers.discard(session)

    # -- client messages --------------------------------------------------------------------------

    def receive_piece(self, session: Session, piece: str, frame_finished: bool, message_finished: bool, now: Instant) -> None:
        """Handle one piece of a client text message, as the frame layer decoded it (a frame, or
        the part of one that has arrived).  A message in one piece is handled at once; the pieces
        of any other are gathered in the session's :class:`MessageAssembler`, bounded in bytes
        and frames (close 1009), and each frame that ends without ending the message takes a
        token from the rate limit like a message: an endless fragment stream is throttled, then
        closed 1008."""
        if session.outbound.closing is not None:
            return  # a closing connection reads only to reach the peer's close
        s = self.settings
        assembly = session.assembly
        if assembly is None:
            if message_finished:
                if over_limit(piece, s.max_message_bytes):
                    session.outbound.request_close(CLOSE_MESSAGE_TOO_BIG, CLOSE_REASONS[Piece.TOO_BIG], flush=False)
                else:
                    self.receive(session, piece, now)
                return
            assembly = session.assembly = MessageAssembler(s.max_message_bytes, s.max_fragments)
        verdict = assembly.feed(piece, frame_finished, message_finished)
        if verdict is Piece.PARTIAL:
            return
        if verdict is Piece.FRAGMENT:
            self._rate_check(session, now.mono, now)
            return
        session.assembly = None
        if verdict is Piece.COMPLETE:
            self.receive(session, assembly.text(), now)
        else:
            session.outbound.request_close(CLOSE_MESSAGE_TOO_BIG, CLOSE_REASONS[verdict], flush=False)

    def ping(self, session: Session, pong: bytes, now: float) -> None:
        """A WebSocket ping from the client, to be answered with ``pong`` (the shell frames it).

        It takes a token from the client's rate limit like a message; one over the limit is not
        answered (a control frame gets no ERROR message), and a flood is closed 1008.  The pong
        counts against the queue bound, and at most one waits in the queue (``Kind.PONG``)."""
        if session.outbound.closing is None and self._rate_check(session, now, None) is RateVerdict.OK:
            self.reply(session, pong, Kind.PONG)

    def _rate_check(self, session: Session, mono: float, answer_at: Instant | None) -> RateVerdict:
        """Take a token for one frame the client sent.  Past the strikes the connection is closed
        1008; a limited data frame is answered with ERROR ``rate_limited`` (``answer_at``, its
        timestamp), a limited control frame (None) is not answered."""
        verdict = session.rate.take(mono)
        if verdict is RateVerdict.CLOSE:
            self.counters.rate_limit_closes += 1
            session.outbound.request_close(CLOSE_POLICY_VIOLATION, "rate limit exceeded", flush=True)
        elif verdict is RateVerdict.LIMITED and answer_at is not None:
            self._error(session, ClientError("rate_limited", "too many messages; slow down"), answer_at)
        return verdict

    def receive(self, session: Session, text: str, now: Instant) -> None:
        """Handle one whole client text message; replies and closes are queued on the session."""
        if self._rate_check(session, now.mono, now) is not RateVerdict.OK:
            return
        try:
            request = parse_client_message(text)
            if isinstance(request, Ping):
                session.last_alive = now.mono
                self.reply(session, wire.pong_frame(now.iso))
            elif isinstance(request, Subscribe):
                self._subscribe(session, request, now)
            elif isinstance(request, Unsubscribe):
                self._check_known(request.topics)
                self._unindex(session)
                session.subscriptions.unsubscribe(request.topics, self.topics.names)
                self._index(session)
                self.reply(session, wire.subscribed_frame(session.subscriptions.names, now.iso))
            elif isinstance(request, SnapshotRequest):
                if request.topics is None:
                    names = session.subscriptions.effective(self.topics.names)
                else:
                    self._check_known(request.topics)
                    self._check_allowed(session, request.topics)
                    wanted = set(request.topics)
                    names = [t for t in self.topics.names if ALL in wanted or t in wanted]
                self._requested_snapshot(session, names, now)
        except ClientError as err:
            self._error(session, err, now)

    def _requested_snapshot(self, session: Session, names: list[str], now: Instant) -> None:
        """Queue a SNAPSHOT the client asked for (``snapshot``, or ``subscribe`` with ``snapshot``).

        Each client has a budget of requested SNAPSHOT bytes per second (a token bucket of
        ``snapshot_budget_bytes`` a second, ``snapshot_burst_bytes`` deep; one larger than the
        burst is served when the bucket is full and leaves it in debt): a 41-byte request must
        not buy a megabyte at the message rate.  Over the budget, or when the SNAPSHOT does not
        fit the client's byte bound (one is still on its way: see :mod:`uipd.core.outbound`),
        the request gets ERROR ``rate_limited`` and no frame is built.  The connect and resync
        SNAPSHOTs are the server's, never refused, and not charged."""
        s = self.settings
        budget = session.snapshot_budget
        if budget is None:
            budget = session.snapshot_budget = TokenBucket.start(s.snapshot_budget_bytes, s.snapshot_burst_bytes, None, now.mono)
        cost = self.topics.snapshot_cost(names)
        queue = session.outbound
        refused = ClientError("rate_limited", "snapshot requests past this client's budget (bytes per second, one still on its way); ask less often")
        if not queue.snapshot_fits(cost) or budget.take(now.mono, cost) is not RateVerdict.OK:
            raise refused
        # Checked above but for the frame's envelope (a few dozen bytes): refused, not a slow consumer.
        if queue.offer(self.topics.snapshot_frame(names, now.mono, now.iso, requested=True), Kind.SNAPSHOT) is Offer.OVERFLOW:
            raise refused

    def _subscribe(self, session: Session, request: Subscribe, now: Instant) -> None:
        self._check_known(request.topics)
        self._check_allowed(session, request.topics)
        before = set(session.subscriptions.effective(self.topics.names))
        held = session.subscriptions.names if session.subscriptions.explicit else set()
        if len(held | set(request.topics)) > self.settings.max_subscriptions:
            self.counters.subscription_limit += 1
            raise ClientError(
                "too_many_subscriptions", f"at most {self.settings.max_subscriptions} topics may be subscribed at once"
            )
        self._unindex(session)
        session.subscriptions.subscribe(request.topics)
        self._index(session)
        self.reply(session, wire.subscribed_frame(session.subscriptions.names, now.iso))
        if request.snapshot:
            added = [t for t in session.subscriptions.effective(self.topics.names) if t not in before]
            self._requested_snapshot(session, added, now)

    def _check_allowed(self, session: Session, names: Iterable[str]) -> None:
        if session.allowed_topics is None:
            return
        # "all" would include topics outside the claim: a restricted client names its topics.
        denied = [n for n in names if n == ALL or n not in session.allowed_topics]
        if denied:
            self.counters.forbidden += 1
            raise ClientError("forbidden", "not allowed for this client: " + ", ".join(denied), topics=denied)

    def _check_known(self, names: Iterable[str]) -> None:
        unknown = [n for n in names if n != ALL and n not in self.topics]
        if unknown:
            raise ClientError("unknown_topic", "unknown topic(s): " + ", ".join(unknown), topics=unknown)

    def _error(self, session: Session, err: ClientError, now: Instant) -> None:
        self.counters.client_errors += 1
        self.reply(session, wire.error_frame(err.error_code, err.message, now.iso, topics=err.topics))

    # -- publishing -------------------------------------------------------------------------------

    def publish(self, pub: Publication, now: Instant, *, seq: int | None = None) -> PublishResult:
        """Apply a publication to topic state and queue it, framed once, for its recipients.

        Atomic: the publication's data was checked and encoded when it was built, and its frame is
        built here before state, seq or counters change; a publish that raises changed nothing.
        ``seq`` is given when the cluster assigned it (the Redis broker); by default it is the
        topic's next."""
        state = None
        if pub.topic is not None:
            state = self.topics.get(pub.topic)
            if state is None:
                raise UnknownTopic(pub.topic)
            seq = state.seq + 1 if seq is None else seq
        else:
            seq = None
        if pub.kind == "UPDATE":
            payload = wire.update_payload(pub.topic, pub.data_json, pub.removed, now.iso, seq)
        else:
            payload = wire.alert_payload(pub.topic, pub.data_json, now.iso, seq)
        frame = wire.frame_text(payload)
        if state is not None:
            if pub.kind == "UPDATE":
                self.topics.apply(state.name, pub.upserts, pub.removed)
            state.seq = seq
        kind = Kind.UPDATE if pub.kind == "UPDATE" else Kind.CONTROL
        slow_before = (self.counters.resyncs, self.counters.slow_disconnects)
        if pub.broadcast:
            self.counters.broadcasts += 1
            recipients = self._fan_out_broadcast(pub.topic, frame, kind)
        else:
            assert pub.topic is not None
            self.counters.published += 1
            recipients = self._fan_out(chain(self._all_subscribers, self._topic_subscribers[pub.topic]), frame, kind)
        self.counters.deliveries += recipients
        self.counters.count_publish(pub.topic, pub.kind, pub.broadcast, len(frame), recipients, slow_before)
        return PublishResult(seq, recipients)

    def _fan_out_broadcast(self, topic: str | None, frame: bytes, kind: Kind) -> int:
        """A broadcast reaches every client that may receive its topic.  An UPDATE is droppable
        (superseded by a resync SNAPSHOT) only for the topic's subscribers, whose SNAPSHOT holds the
        topic; to anyone else, and without a topic, it is queued like an ALERT: delivered, or the
        client is closed 4008 (rare publishes: the subscriber test here is not on the hot path)."""
        receivers = [s for s in self.sessions.values() if topic is None or s.may_receive(topic)]
        if kind is not Kind.UPDATE or topic is None:
            return self._fan_out(receivers, frame, Kind.CONTROL)
        subscribed = self._all_subscribers | self._topic_subscribers[topic]
        return self._fan_out([s for s in receivers if s in subscribed], frame, Kind.UPDATE) + self._fan_out(
            [s for s in receivers if s not in subscribed], frame, Kind.CONTROL
        )

    def _fan_out(self, targets: Iterable[Session], frame: bytes, kind: Kind) -> int:
        delivered = 0
        queued, overflow = Offer.QUEUED, Offer.OVERFLOW  # once, not per delivery (slow on 3.11)
        for session in targets:
            result = session.outbound.offer(frame, kind)
            if result is queued:
                delivered += 1
            elif result is overflow and self._slow_consumer(session, frame, kind):
                delivered += 1
        return delivered

    def _slow_consumer(self, session: Session, frame: bytes, kind: Kind) -> bool:
        """Apply the slow-consumer policy; True if ``frame`` was still queued for the session.

        O(1) for every frame but the one that starts a resync (``start_resync`` filters the queue
        once, then does nothing while the resync is owed): a client that keeps overflowing, e.g.
        with pings it does not read the pongs of, costs no pass over its queue per frame."""
        queue = session.outbound
        if self.settings.slow_consumer == "resync" and kind is not Kind.SNAPSHOT:
            if not queue.resync_pending:
                self.counters.resyncs += 1
                queue.start_resync()
            if kind is Kind.UPDATE:
                queue.dropped_updates += 1  # the UPDATE that overflowed: superseded by the resync
                return False
            # An ALERT or a reply is never dropped silently: queued, or the client is told by a close.
            if queue.force(frame, kind):
                return True
        self.counters.slow_disconnects += 1
        queue.request_close(CLOSE_SLOW_CONSUMER, "slow consumer", flush=False)
        return False

    def load_topic(self, name: str, entities: Iterable[tuple[str, Any]], seq: int) -> None:
        """Replace a topic's state and seq (a node loading the cluster's state); clients are not told
        here: see ``resync_all``."""
        state = self.topics.topics[name]
        state.entities.clear()
        self.topics.apply(name, entities, ())
        state.seq = seq

    def resync_all(self) -> int:
        """Every client's pending UPDATEs are dropped and a ``"resync": true`` SNAPSHOT is owed to it
        (after state was reloaded, e.g. when the cluster broker came back). Returns how many."""
        count = 0
        for session in self.sessions.values():
            if session.outbound.closing is None:
                session.outbound.start_resync()
                count += 1
        self.counters.resyncs += count
        return count

    def take_resync(self, session: Session, now: Instant) -> bool:
        """Called by the writer when a session's queue ran dry: queue its resync SNAPSHOT if one is owed."""
        queue = session.outbound
        if not queue.resync_pending or len(queue) or queue.closing is not None:
            return False
        queue.resync_pending = False
        names = session.subscriptions.effective(self.topics.names)
        queue.offer(self.topics.snapshot_frame(names, now.mono, now.iso, resync=True), Kind.SNAPSHOT)
        return True

    # -- liveness and shutdown --------------------------------------------------------------------

    def heartbeat(self, now: Instant) -> HeartbeatPlan:
        """Which sessions to ping now and which are dead (no pong or ``ping`` within the timeout)."""
        s = self.settings
        pings: list[tuple[Session, bytes]] = []
        dead: list[Session] = []
        failed: list[tuple[Session, Exception]] = []
        for session in self.sessions.values():
            # A bug in one session's state fails that session only: the others still get their
            # pings and checks in this pass (a try costs nothing in 3.11 unless it raises).
            try:
                if session.outbound.closing is not None:
                    continue
                if session.expires_at is not None and now.mono >= session.expires_at:
                    self.counters.expired_closes += 1
                    session.outbound.request_close(CLOSE_TOKEN_EXPIRED, "token expired", flush=True)
                    continue
                if now.mono - session.last_alive > s.heartbeat_timeout:
                    dead.append(session)
                elif now.mono >= session.next_ping_at:
                    session.next_ping_at = now.mono + s.heartbeat_interval
                    session.pings_sent += 1
                    payload = b"uipd-%d" % session.pings_sent
                    if session.outbound.offer(wire.frame_ping(payload), Kind.CONTROL) is Offer.QUEUED:
                        pings.append((session, payload))
            except Exception as exc:
                failed.append((session, exc))
        self.counters.heartbeat_drops += len(dead)
        return HeartbeatPlan(pings, dead, failed)

    def pong(self, session: Session, now: float) -> None:
        """A WebSocket pong from the client (the answer to our ping, or unsolicited): a sign of
        life.  It takes a token from the rate limit like a ping; one over the limit is ignored,
        and a flood of them is closed 1008."""
        if self._rate_check(session, now, None) is RateVerdict.OK:
            session.last_alive = now

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "going away") -> None:
        for session in self.sessions.values():
            session.outbound.request_close(code, reason, flush=True)

    # -- reading ----------------------------------------------------------------------------------

    def subscriber_count(self, topic: str) -> int:
        return len(self._all_subscribers) + len(self._topic_subscribers[topic])

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.sessions),
            "topics": {
                name: {
                    "subscribers": self.subscriber_count(name),
                    "entities": len(state.entities),
                    "seq": state.seq,
                }
                for name, state in self.topics.topics.items()
            },
        }

    def add_topics(self, names: Iterable[str]) -> list[str]:
        """Offer new topics (a config reload added a source); returns those that were new.
        Clients holding ``all`` receive them from now on."""
        added = [name for name in names if self.topics.add(name)]
        for name in added:
            self._topic_subscribers[name] = set()
        return added

    def apply_settings(self, settings: HubSettings) -> None:
        """New settings (a config reload).  Clients that connect later take all of them from
        ``self.settings``; clients connected now get those each of them holds a copy of (the queue
        bound, the message rate limit), or a reload would not reach a long-lived client at all."""
        self.settings = settings
        for session in self.sessions.values():
            session.outbound.max_bytes = settings.max_queue_bytes
            bucket = session.rate
            bucket.rate, bucket.burst, bucket.strikes_allowed = settings.rate_limit, settings.rate_burst, settings.rate_limit_strikes
            bucket.tokens = min(bucket.tokens, bucket.burst)  # a smaller bucket holds no more than it fits
