"""A client's whole text messages, parsed and answered (docs/protocol.md sections 2-3): ``ping``,
``subscribe``, ``unsubscribe``, ``snapshot``; and the rate limit every frame a client sends is
charged against.  Replies, ERRORs and closes are queued on the session."""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define

from uipd.core import closecodes, wire
from uipd.core.clock import Instant
from uipd.core.counters import HubCounters
from uipd.core.errors import ClientError
from uipd.core.messages import Ping, SnapshotRequest, Subscribe, Unsubscribe, parse_client_message
from uipd.core.outbound import Delivery, Offer
from uipd.core.ratelimit import RateVerdict, TokenBucket
from uipd.core.recovery import Recoveries, parse_since
from uipd.core.routing import Router
from uipd.core.sessions import Session, SubscriptionIndex
from uipd.core.settings import HubSettings
from uipd.core.subscriptions import ALL
from uipd.core.topics import TopicTable

_RATE_LIMITED = closecodes.RATE_LIMITED


def _snapshot_refused() -> ClientError:
    return ClientError("rate_limited", "snapshot requests past this client's budget (bytes per second, one still on its way); ask less often")


@define
class Dispatcher:
    topics: TopicTable
    index: SubscriptionIndex
    router: Router
    counters: HubCounters
    settings: HubSettings
    recoveries: Recoveries | None = None

    def receive(self, session: Session, text: str, now: Instant) -> None:
        """Handle one whole client text message."""
        if self.rate_check(session, now.mono, now) is not RateVerdict.OK:
            return
        try:
            request = parse_client_message(text)
            if isinstance(request, Ping):
                session.last_alive = now.mono
                self.router.reply(session, wire.pong_frame(now.iso))
            elif isinstance(request, Subscribe):
                self._subscribe(session, request, now)
            elif isinstance(request, Unsubscribe):
                self._check_known(request.topics)
                self.index.remove(session)
                session.subscriptions.unsubscribe(request.topics, self.topics.names)
                self.index.add(session)
                self.router.reply(session, wire.subscribed_frame(session.subscriptions.names, now.iso))
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

    def rate_check(self, session: Session, mono: float, answer_at: Instant | None) -> RateVerdict:
        """Take a token for one frame the client sent.  Past the strikes the connection is closed
        1008; a limited data frame is answered with ERROR ``rate_limited`` (``answer_at``, its
        timestamp), a limited control frame (None) is not answered."""
        verdict = session.rate.take(mono)
        if verdict is RateVerdict.CLOSE:
            self.counters.rate_limit_closes += 1
            session.outbound.request_close(_RATE_LIMITED.code, _RATE_LIMITED.reason, flush=True)
        elif verdict is RateVerdict.LIMITED and answer_at is not None:
            self._error(session, ClientError("rate_limited", "too many messages; slow down"), answer_at)
        return verdict

    def _error(self, session: Session, err: ClientError, now: Instant) -> None:
        self.counters.client_errors += 1
        self.router.reply(session, wire.error_frame(err.error_code, err.message, now.iso, topics=err.topics))

    def _requested_snapshot(self, session: Session, names: list[str], now: Instant) -> None:
        """Queue a SNAPSHOT the client asked for (``snapshot``, or ``subscribe`` with ``snapshot``).

        Each client has a budget of requested SNAPSHOT bytes per second (a token bucket of
        ``snapshot_budget_bytes`` a second, ``snapshot_burst_bytes`` deep; one larger than the
        burst is served when the bucket is full and leaves it in debt): a 41-byte request must
        not buy a megabyte at the message rate.  Over the budget, or when the SNAPSHOT does not
        fit the client's byte bound (one is still on its way: see :mod:`uipd.core.outbound`),
        the request gets ERROR ``rate_limited`` and no frame is built.  The connect and resync
        SNAPSHOTs are the server's, never refused, and not charged."""
        self._charge(session, self.topics.snapshot_cost(names), now)
        # Checked above but for the frame's envelope (a few dozen bytes): refused, not a slow consumer.
        frame = self.topics.snapshot_frame(names, now.mono, now.iso, requested=True)
        if session.outbound.offer(frame, Delivery.SNAPSHOT) is Offer.OVERFLOW:
            raise _snapshot_refused()

    def _charge(self, session: Session, cost: int, now: Instant) -> None:
        """Take ``cost`` bytes from the client's snapshot budget, or raise ERROR ``rate_limited``."""
        s = self.settings
        budget = session.snapshot_budget
        if budget is None:
            budget = session.snapshot_budget = TokenBucket.start(s.snapshot_budget_bytes, s.snapshot_burst_bytes, None, now.mono)
        if not session.outbound.snapshot_fits(cost) or budget.take(now.mono, cost) is not RateVerdict.OK:
            raise _snapshot_refused()

    def _subscribe(self, session: Session, request: Subscribe, now: Instant) -> None:
        self._check_known(request.topics)
        self._check_allowed(session, request.topics)
        # Checked before anything changes: a malformed since is an ERROR and nothing else.
        since = parse_since(request.since, self.topics) if request.has_since else None
        before = set(session.subscriptions.effective(self.topics.names))
        held = session.subscriptions.names if session.subscriptions.explicit else set()
        if len(held | set(request.topics)) > self.settings.max_subscriptions:
            self.counters.subscription_limit += 1
            raise ClientError(
                "too_many_subscriptions", f"at most {self.settings.max_subscriptions} topics may be subscribed at once"
            )
        self.index.remove(session)
        session.subscriptions.subscribe(request.topics)
        self.index.add(session)
        self.router.reply(session, wire.subscribed_frame(session.subscriptions.names, now.iso))
        receiving = session.subscriptions.effective(self.topics.names)
        added = [t for t in receiving if t not in before] if request.snapshot else []
        if since and self.recoveries is not None:
            # The recovery answer for the topics of since now held (others are ignored), with
            # sections for the topics added without a position, charged like a requested SNAPSHOT.
            wanted = set(receiving)
            mine = {t: pos for t, pos in since.items() if t in wanted}
            sections = [t for t in added if t not in mine]
            self.recoveries.respond(session, mine, sections, now, lambda cost: self._charge(session, cost, now))
        elif request.snapshot:
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
