"""The Redis broker's history reader: recovering clients whose position is older than this node's
own history are answered from the topic's stream in Redis (PROTOCOL.md section 8; the stream is
written by PUBLISH_SCRIPT in the call that assigns the seq).

The core holds such a client's queue and hands the request here (:meth:`RedisHistory.request`,
synchronous: ``Hub.history_reader``).  A task of the broker's session reads the queued requests in
batches, one READ_SCRIPT call per batch (bounded by ``command_timeout``, one range per topic
covering every request of the batch), rebuilds each message's frame byte for byte with
``wire.message_frame``, answers each request (``Hub.complete_recovery``) and backfills the node's
own history with what it read, so the next client of the same topic is served locally and a storm
of clients reads each message once.  Nothing waits for long: a request that cannot be read (not
connected, the queue full, Redis failing or slow, the topic's epoch changed) is answered at once
with "not covered" (for the client: a snapshot section and ``alertsLost``, never a wrong replay).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from attrs import define, field

from uipd.cluster.scripts import READ_SCRIPT, HistoryRange, Keys, StreamEntry, decode_body, read_call, read_reply
from uipd.core import closecodes, wire
from uipd.core.clock import Instant
from uipd.core.history import HistoryEntry
from uipd.core.hub import Hub
from uipd.core.recovery import PendingRecovery

log = logging.getLogger("uipd.cluster.redis")  # one logger for the broker's lines, as operators filter them


def history_entry(entry: StreamEntry, now: float) -> HistoryEntry:
    """The history entry of a stream entry: its frame rebuilt exactly as the fan-out built it
    (same builder, same fields: the channel body holds them), its time moved to this node's
    monotonic clock by its age."""
    header, data_json = decode_body(entry.body)
    frame = wire.message_frame(header["k"], header["t"], data_json, header["r"], header["ts"], entry.seq)
    return HistoryEntry(entry.seq, frame, header["k"] == "ALERT", now - entry.age)


@define
class RedisHistory:
    """``Hub.history_reader`` for the Redis broker (see the module)."""

    hub: Hub
    keys: Keys
    now: Callable[[], Instant]
    batch: int = 64
    """Requests read in one call at most (``[broker] history_batch``)."""
    max_queued: int = 10000
    """Requests waiting at most (``[broker] history_queue``); past it one is answered "not covered" at once."""
    reads: int = 0
    """READ_SCRIPT calls made."""
    unread: int = 0
    """Requests answered without history (not connected, queue full, Redis failing)."""
    _queue: deque[PendingRecovery] = field(factory=deque, init=False)
    _more: trio.Event = field(factory=trio.Event, init=False)
    _connected: bool = field(default=False, init=False)

    def request(self, pending: PendingRecovery) -> None:
        """Queue a recovery for the next read; answered at once without history when none can come."""
        if not self._connected or len(self._queue) >= self.max_queued or not self.hub.settings.history_size:
            self._fail([pending])
            return
        self._queue.append(pending)
        self._more.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self, client: Any, call: Callable[[Awaitable[Any], str], Awaitable[Any]]) -> None:
        """Read queued requests for one session with Redis (``call`` bounds each call).  Raises
        when a read fails (the session is over); every request it leaves is answered first."""
        self._connected = True
        batch: list[PendingRecovery] = []
        try:
            while True:
                while not self._queue:
                    self._more = trio.Event()
                    await self._more.wait()
                batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                await self._read(client, call, batch)
                batch = []
        finally:
            self._connected = False
            left = batch + list(self._queue)
            self._queue.clear()
            self._fail(left)

    def _fail(self, pendings: list[PendingRecovery]) -> None:
        if not pendings:
            return
        self.unread += len(pendings)
        now = self.now()
        for pending in pendings:
            self._complete(pending, {topic: None for topic in pending.remote}, now)

    def _complete(self, pending: PendingRecovery, fetched: dict[str, list[HistoryEntry] | None], now: Instant) -> None:
        """Answer one recovery.  The fault boundary of one client: an answer that cannot be built
        closes that client (1011; its queue would stay held otherwise) and is logged once; the
        batch's other clients and the broker's session with Redis go on."""
        try:
            self.hub.complete_recovery(pending, fetched, now)
        except Exception:
            session = pending.session
            log.error("client %s: its recovery answer failed; closing it", session.id, exc_info=True)
            internal = closecodes.INTERNAL_ERROR
            session.outbound.request_close(internal.code, internal.reason, flush=False)

    async def _read(self, client: Any, call: Callable[[Awaitable[Any], str], Awaitable[Any]], batch: list[PendingRecovery]) -> None:
        size = self.hub.settings.history_size
        spans: dict[tuple[str, str], tuple[int, int]] = {}  # (topic, epoch) -> (first, last): one range each
        for pending in batch:
            for topic, (since, upto) in pending.remote.items():
                key = (topic, pending.since_by_topic[topic].epoch)
                first, last = spans.get(key, (since + 1, upto))
                spans[key] = (min(first, since + 1), max(last, upto))
        # A range longer than the history cannot be covered: not read (it is the reply's bound).
        ranges = [HistoryRange(t, first, last, e) for (t, e), (first, last) in spans.items() if last - first < size]
        got: dict[tuple[str, str], list[HistoryEntry] | None] = {}
        if ranges:
            keys, args = read_call(self.keys, self.hub.settings.history_ttl, ranges)
            self.reads += 1
            reply = await call(client.eval(READ_SCRIPT, keys=keys, args=args), "a history read")
            mono = self.now().mono
            for r, entries in zip(ranges, read_reply(reply)):
                got[(r.topic, r.epoch)] = None if entries is None else [history_entry(e, mono) for e in entries]
        now = self.now()
        topics = self.hub.topics.topics
        for (topic, epoch), entries in got.items():
            state = topics.get(topic)
            if entries and state is not None and state.epoch == epoch:
                state.history.backfill(e for e in entries if e.seq <= state.seq)
        for pending in batch:
            fetched: dict[str, list[HistoryEntry] | None] = {}
            for topic, (since, upto) in pending.remote.items():
                entries = got.get((topic, pending.since_by_topic[topic].epoch))
                fetched[topic] = None if entries is None else [e for e in entries if since < e.seq <= upto]
            self._complete(pending, fetched, now)
