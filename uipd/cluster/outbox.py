"""The Redis broker's publish queue: publications wait here (bounded, ``max_pending``), go to
Redis in batches of one PUBLISH_SCRIPT call each (a batch is never partly executed), and each
one's outcome is told to whoever waits: published (with its seq), refused, or unknown (sent, no
answer).  The ALERTs among those not (or maybe not) published are counted (:mod:`uipd.cluster.losses`)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import coredis
import trio
from attrs import define, field

from uipd.cluster.losses import AlertLosses
from uipd.cluster.scripts import LEASE_LOST_ERROR, PUBLISH_SCRIPT, Keys, publish_call, publish_outcome
from uipd.core.errors import PublishError
from uipd.core.hub import PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import new_epoch

log = logging.getLogger("uipd.cluster.redis")  # one logger for the broker's lines, as operators filter them

BATCH = 256
"""Publications sent in one script call at most."""

_State = Literal["queued", "sent", "published", "failed", "unknown", "withdrawn"]


@define(eq=False)
class Pending:
    """A publication on its way through Redis, and what became of it."""

    pub_id: str
    pub: Publication
    ts: str
    source: str
    """The source that published it ("": the HTTP API), named in the log if it is lost."""
    lease: str = ""
    """The token of the source's lease this node held when it was published ("": no lease); Redis
    publishes it only while that is still the lease's value."""
    on_lost: Callable[[], None] | None = None
    """Called if it is not (or maybe not) published: the publisher stops expecting its effect."""
    state: _State = "queued"
    """``queued`` -> ``sent`` -> ``published`` | ``failed`` (Redis refused it) | ``unknown`` (sent,
    no answer); or ``withdrawn``: the API stopped waiting before it was sent, so it never will be."""
    seq: int | None = None
    error: str = ""
    result: PublishResult | None = None
    """This node's fan-out of it, once it came back through the channel."""
    answered: trio.Event = field(factory=trio.Event)
    """Set when the state leaves ``sent``."""
    applied: trio.Event = field(factory=trio.Event)
    """Set when it came back through the channel and was fanned out here."""


@define
class Outbox:
    """The publications on their way to Redis, from :meth:`submit` or :meth:`publish` to their outcome."""

    keys: Keys
    node_id: str
    losses: AlertLosses
    max_pending: int = 10000
    publish_timeout: float = 2.0
    """Seconds :meth:`publish` (the HTTP API) waits for the outcome."""
    alert_record: int = 1000
    """ALERT seqs Redis keeps per topic (``[broker] alert_record``; see PUBLISH_SCRIPT)."""
    history_size: Callable[[], int] = lambda: 0
    """Messages kept in each topic's history stream (``[history] size``, read at each batch: a reload changes it)."""
    _send: trio.MemorySendChannel[Pending] = field(init=False)
    _receive: trio.MemoryReceiveChannel[Pending] = field(init=False)
    _ids: Any = field(factory=itertools.count, init=False)
    _waiters: dict[str, Pending] = field(factory=dict, init=False)
    """The HTTP API's publications, by id, while it waits for them."""

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(self.max_pending)

    def submit(self, pub: Publication, ts: str, source: str, lease: str, on_lost: Callable[[], None] | None) -> PublishResult:
        """Queue a source's publication (see ``RedisBroker.submit``); ``lease``: the token of its
        source's lease ("": none)."""
        self._enqueue(pub, ts, source, lease).on_lost = on_lost
        return PublishResult(None, 0)

    async def publish(self, pub: Publication, ts: str) -> PublishResult:
        """Publish and wait (at most ``publish_timeout``) until the message came back through
        Redis and was fanned out here (the HTTP API's call): the result has the cluster's seq and
        this node's recipients.  The answer is the truth about this one message: a result when it
        was published (recipients 0 if it has not come back here yet), 503 when it was not,
        504 ``publish_unknown`` when it was sent and Redis did not answer."""
        item = self._enqueue(pub, ts, "", "")
        self._waiters[item.pub_id] = item
        try:
            with trio.move_on_after(self.publish_timeout):
                await item.answered.wait()
                if item.state == "published":
                    await item.applied.wait()
        finally:
            self._waiters.pop(item.pub_id, None)
        if item.result is not None:
            return item.result
        if item.state == "published":
            return PublishResult(item.seq, 0)
        if item.state == "queued":  # never sent: withdraw it, so it never will be
            item.state = "withdrawn"
            self._lost(item, "not_sent")
            raise PublishError("broker_unavailable", "the message could not be sent to the cluster in time; it was not published", http_status=503)
        if item.state == "failed":
            raise PublishError("publish_failed", f"Redis refused the message ({item.error}); it was not published", http_status=503)
        raise PublishError(
            "publish_unknown", "the message was sent to Redis, which did not answer in time: it may or may not have been published", http_status=504
        )

    def came_back(self, pub_id: str, result: PublishResult) -> None:
        """A publication came back through the channel and was fanned out here: its waiter has its answer."""
        item = self._waiters.get(pub_id)
        if item is not None:
            item.state, item.seq, item.result = "published", result.seq, result
            item.answered.set()
            item.applied.set()

    def _enqueue(self, pub: Publication, ts: str, source: str, lease: str) -> Pending:
        item = Pending(f"{self.node_id}:{next(self._ids)}", pub, ts, source, lease)
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            raise PublishError("broker_busy", f"more than {self.max_pending} publications wait for Redis", http_status=503) from None
        return item

    async def run(self, client: Any, call: Callable[[Awaitable[Any], str], Awaitable[Any]]) -> None:
        """Send what is queued to Redis through ``client`` for one session; ``call`` bounds each
        call (``RedisBroker._call``).  Raises when the session is over."""
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = [item for item in batch if item.state == "queued"]  # not withdrawn by the API
            if not batch:
                continue
            keys, args = publish_call(self.keys, self.alert_record, self.history_size(), new_epoch(), batch)
            for item in batch:
                item.state = "sent"
            try:
                replies = await call(client.eval(PUBLISH_SCRIPT, keys=keys, args=args), "a publish")
            except coredis.exceptions.ResponseError as exc:  # refused as a whole (out of memory, ...): nothing ran
                self._settle(batch, "failed", str(exc))
                continue
            except BaseException as exc:  # timeout, lost connection, cancelled: sent, no answer
                self._settle(batch, "unknown", str(exc) or type(exc).__name__)
                raise
            refused: dict[str, list[Pending]] = {}
            for item, reply in zip(batch, replies):
                outcome = publish_outcome(reply)
                if isinstance(outcome, int):
                    if item.state == "sent":  # (else it came back through the channel already)
                        item.state, item.seq = "published", outcome or None
                        item.answered.set()
                else:
                    refused.setdefault(outcome, []).append(item)
            for error, items in refused.items():
                if error == LEASE_LOST_ERROR:
                    self._settle(items, "failed", "their source's lease is no longer this node's", "lease_lost")
                else:
                    self._settle(items, "failed", error)

    def _settle(self, items: list[Pending], state: Literal["failed", "unknown"], error: str, reason: str = "") -> None:
        """``items`` were refused by Redis (``failed``) or got no answer (``unknown``): tell whoever
        waits, and count and log every ALERT among them (``reason``: see :data:`uipd.cluster.losses.LOST_REASONS`)."""
        reason = reason or ("publish_failed" if state == "failed" else "publish_unknown")
        items = [item for item in items if item.state == "sent"]  # not those that came back meanwhile
        if not items:
            return
        for item in items:
            item.state, item.error = state, error
            item.answered.set()
        what = {
            "publish_failed": "refused by Redis, not published",
            "publish_unknown": "sent without an answer, may or may not be published",
            "lease_lost": "dropped by Redis, so that they do not land after the new holder's",
        }[reason]
        sources = sorted({item.source or "the HTTP API" for item in items})
        log.warning("cluster broker: %d publication(s) %s (%s); from %s", len(items), what, error, ", ".join(sources))
        for item in items:
            self._lost(item, reason)

    def _lost(self, item: Pending, reason: str) -> None:
        if item.on_lost is not None:
            item.on_lost()
        if item.pub.kind == "ALERT":
            self.losses.count(item.pub.topic, item.seq, reason, f" from {f'source {item.source}' if item.source else 'the HTTP API'}")

