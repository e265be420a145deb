"""Connected clients as the core sees them, and the subscription index: who receives each topic
(docs/protocol.md section 3)."""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define, field

from uipd.core.assembly import MessageAssembler
from uipd.core.outbound import OutboundQueue
from uipd.core.ratelimit import TokenBucket
from uipd.core.subscriptions import SubscriptionSet


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
    check_at: float | None = None
    """When the heartbeat looks at it next (its entry in ``liveness.HeartbeatSchedule``); None:
    not scheduled (it left, or it is closing)."""
    allowed_topics: frozenset[str] | None = None
    """The topics this client may subscribe to (a JWT ``topics`` claim); None: every topic."""
    expires_at: float | None = None
    """Monotonic time its credentials expire; it is closed 4001 then."""
    assembly: MessageAssembler | None = None
    """The fragmented message being received, if one is (made when it starts: idle clients hold none)."""
    snapshot_budget: TokenBucket | None = None
    """Bytes of requested SNAPSHOTs (made at the first request, full: as if made at connect)."""
    parsed_while_closing: int = 0
    """Bytes of frames parsed since the connection began closing (see ``Hub.keep_parsing``)."""

    def may_receive(self, topic: str) -> bool:
        return self.allowed_topics is None or topic in self.allowed_topics


@define
class SubscriptionIndex:
    """Which sessions receive each topic, for the fan-out.  A session holding ``all`` is in
    ``all_topics`` only, any other in the set of each topic it names: a publication reaches each
    recipient once, and a topic's recipients are found without looking at any other session."""

    all_topics: set[Session] = field(factory=set)
    by_topic: dict[str, set[Session]] = field(factory=dict)

    @classmethod
    def of(cls, names: Iterable[str]) -> SubscriptionIndex:
        return cls(by_topic={name: set() for name in names})

    def add_topic(self, name: str) -> None:
        self.by_topic.setdefault(name, set())

    def add(self, session: Session) -> None:
        """Index a session under its subscriptions (a topic the index lacks raises KeyError)."""
        if session.subscriptions.wants_all:
            self.all_topics.add(session)
            return
        for name in session.subscriptions.names:
            self.by_topic[name].add(session)

    def remove(self, session: Session) -> None:
        """Remove a session wherever it is (also one that ``add`` failed for half-way)."""
        self.all_topics.discard(session)
        for name in session.subscriptions.names:
            subscribers = self.by_topic.get(name)
            if subscribers is not None:
                subscribers.discard(session)

    def subscribed(self, topic: str) -> set[Session]:
        """The sessions whose subscriptions hold ``topic`` (a new set)."""
        return self.all_topics | self.by_topic[topic]

    def count(self, topic: str) -> int:
        return len(self.all_topics) + len(self.by_topic[topic])
