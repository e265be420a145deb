"""Routing: a publication applied to topic state and queued, framed once, for every client it
reaches (docs/protocol.md sections 4-5), and the slow-consumer policy for a client whose queue
cannot take it.  The shell's writers then write what the queues hold."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from attrs import define, frozen

from uipd.core import closecodes, wire
from uipd.core.clock import Instant
from uipd.core.counters import HubCounters
from uipd.core.errors import UnknownTopic
from uipd.core.outbound import Delivery, Offer
from uipd.core.publish import Publication
from uipd.core.sessions import Session, SubscriptionIndex
from uipd.core.settings import SlowConsumerPolicy
from uipd.core.topics import TopicTable

_SLOW = closecodes.SLOW_CONSUMER


@frozen
class PublishResult:
    seq: int | None
    recipients: int


@define
class Router:
    topics: TopicTable
    sessions: dict[str, Session]
    """Every connected session (the hub's: a broadcast reaches all of them)."""
    index: SubscriptionIndex
    counters: HubCounters
    policy: SlowConsumerPolicy = "resync"

    def reply(self, session: Session, frame: bytes, kind: Delivery = Delivery.RELIABLE) -> None:
        """Queue a frame for one client; one that does not fit is a slow consumer's."""
        if session.outbound.offer(frame, kind) is Offer.OVERFLOW:
            self.slow_consumer(session, frame, kind)

    def publish(self, pub: Publication, now: Instant, seq: int | None) -> PublishResult:
        """Apply a publication to topic state and queue it, framed once, for its recipients.

        Atomic: the publication's data was checked and encoded when it was built, and its frame is
        built here before state, seq or counters change; a publish that raises changed nothing.
        ``seq`` is given when the cluster assigned it (the Redis broker); None: the topic's next."""
        state = None
        if pub.topic is not None:
            state = self.topics.get(pub.topic)
            if state is None:
                raise UnknownTopic(pub.topic)
            seq = state.seq + 1 if seq is None else seq
        else:
            seq = None
        frame = wire.message_frame(pub.kind, pub.topic, pub.data_json, pub.removed, now.iso, seq)
        if state is not None:
            if pub.kind == "UPDATE":
                self.topics.apply(state.name, pub.upserts, pub.removed)
            # The very frame the live clients get is what a recovering client is replayed.
            self.topics.record(state, seq, frame, pub.kind == "ALERT", now.mono)
        kind = Delivery.DROPPABLE if pub.kind == "UPDATE" else Delivery.RELIABLE
        counters = self.counters
        slow_before = (counters.resyncs, counters.slow_disconnects)
        if pub.broadcast:
            counters.broadcasts += 1
            recipients = self._fan_out_broadcast(pub.topic, frame, kind)
        else:
            assert pub.topic is not None
            counters.published += 1
            index = self.index
            recipients = self._fan_out(chain(index.all_topics, index.by_topic[pub.topic]), frame, kind)
        counters.deliveries += recipients
        counters.count_publish(pub.topic, pub.kind, pub.broadcast, len(frame), recipients, slow_before)
        return PublishResult(seq, recipients)

    def _fan_out_broadcast(self, topic: str | None, frame: bytes, kind: Delivery) -> int:
        """A broadcast reaches every client that may receive its topic.  An UPDATE is droppable
        (superseded by a resync SNAPSHOT) only for the topic's subscribers, whose SNAPSHOT holds the
        topic; to anyone else, and without a topic, it is queued like an ALERT: delivered, or the
        client is closed 4008 (rare publishes: the subscriber test here is not on the hot path)."""
        receivers = [s for s in self.sessions.values() if topic is None or s.may_receive(topic)]
        if kind is not Delivery.DROPPABLE or topic is None:
            return self._fan_out(receivers, frame, Delivery.RELIABLE)
        subscribed = self.index.subscribed(topic)
        return self._fan_out([s for s in receivers if s in subscribed], frame, Delivery.DROPPABLE) + self._fan_out(
            [s for s in receivers if s not in subscribed], frame, Delivery.RELIABLE
        )

    def _fan_out(self, targets: Iterable[Session], frame: bytes, kind: Delivery) -> int:
        delivered = 0
        queued, overflow = Offer.QUEUED, Offer.OVERFLOW  # once, not per delivery (slow on 3.11)
        for session in targets:
            result = session.outbound.offer(frame, kind)
            if result is queued:
                delivered += 1
            elif result is overflow and self.slow_consumer(session, frame, kind):
                delivered += 1
        return delivered

    def slow_consumer(self, session: Session, frame: bytes, kind: Delivery) -> bool:
        """Apply the slow-consumer policy; True if ``frame`` was still queued for the session.

        O(1) for every frame but the one that starts a resync (``start_resync`` filters the queue
        once, then does nothing while the resync is owed): a client that keeps overflowing, e.g.
        with pings it does not read the pongs of, costs no pass over its queue per frame."""
        queue = session.outbound
        if self.policy == "resync" and kind is not Delivery.SNAPSHOT:
            if not queue.resync_pending:
                self.counters.resyncs += 1
                queue.start_resync()
            if kind is Delivery.DROPPABLE:
                queue.dropped_updates += 1  # the UPDATE that overflowed: superseded by the resync
                return False
            # An ALERT or a reply is never dropped silently: queued, or the client is told by a close.
            if queue.force(frame, kind):
                return True
        self.counters.slow_disconnects += 1
        queue.request_close(_SLOW.code, _SLOW.reason, flush=False)
        return False

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
        queue.offer(self.topics.snapshot_frame(names, now.mono, now.iso, resync=True), Delivery.SNAPSHOT)
        return True
