"""The Redis broker: every node publishes through Redis and fans out locally.

One Lua script per publish assigns the topic's ``seq`` (HINCRBY), applies the UPDATE to the
topic's state hash and PUBLISHes the message, atomically; Redis runs scripts one at a time and
delivers a channel's messages in order, so every node sees every topic's messages in one order
with one seq.  A node subscribes first, then loads the state and seqs (one script), then applies
the channel's messages whose seq is newer than what it loaded: no gap, no duplicate.  When Redis
is lost the node keeps its clients, reports not ready, retries with backoff and, once back,
catches up: the messages it missed are read from each topic's history stream and fanned out to
its clients as if they had come live (ALERTs included); a topic whose stream does not hold them
all is reloaded, and every client gets a ``"resync": true`` SNAPSHOT.

Each topic's epoch (PROTOCOL.md section 8) is Redis', stored beside its seq and carried by every
channel message: a message of another epoch (Redis lost the topic's data, a failover rotated it)
makes the node reload at once.  A seq behind this node's under the same epoch (a failover to a
replica that lagged) starts a new epoch in the load script itself.  History for clients recovering
past this node's own is read from Redis by :mod:`uipd.cluster.history`.

Every wait on Redis is bounded (``command_timeout``; a PING every ``ping_interval`` finds a Redis
that stopped answering): a timeout ends the session, exactly like a lost connection.  Publications
go as one script call per batch, so a batch is never partly executed, and each publication's
outcome is known: published (with its seq), refused, or unknown (sent, no answer).  An ALERT that
this node's clients did not get, or that may not have been published, is counted
(``lost_alerts``, the metric ``uipd_alerts_lost_total``) and logged with its topic and seq; the
publish script keeps a bounded record of each topic's ALERT seqs so that a node back from a
cut-off can tell which messages it missed were ALERTs.

Here: the session with Redis (connect, load, resync, PING) and the leases; the Lua scripts and
their encoding are :mod:`uipd.cluster.scripts`, the publish queue :mod:`uipd.cluster.outbox`, the
lost-ALERT accounting :mod:`uipd.cluster.losses`, the cluster view :mod:`uipd.cluster.nodes`, the
history reader :mod:`uipd.cluster.history`.

Client: coredis 6 (anyio, so it runs on trio; pinned).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import coredis
import trio
from attrs import define, field
from coredis.retry import NoRetryPolicy

from uipd.cluster.history import RedisHistory
from uipd.cluster.losses import AlertLosses
from uipd.cluster.nodes import NodeList
from uipd.cluster.outbox import Outbox
from uipd.cluster.scripts import (
    LOAD_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT, SEED_SCRIPT, Keys, LoadedTopic, decode_body, decode_message, load_call, loaded_topics, seed_call,
)
from uipd.core import publish
from uipd.core.backoff import Backoff
from uipd.core.clock import Instant
from uipd.core.errors import PublishError, UnknownTopic
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication
from uipd.core.topics import new_epoch

log = logging.getLogger(__name__)
T = TypeVar("T")


def _no_empty_traceback(record: logging.LogRecord) -> bool:
    """coredis logs a failed connection attempt with ``logger.exception`` from a ``finally`` block
    (``BaseConnection.run``), where no exception is being handled: the formatter prints
    ``NoneType: None`` under the line, on every reconnect attempt.  Dropped: there is no traceback."""
    if record.exc_info == (None, None, None):
        record.exc_info = None
    return True


logging.getLogger("coredis").addFilter(_no_empty_traceback)


class BrokerTimeout(TimeoutError):
    """Redis did not answer within ``command_timeout``: the session is over, as if the connection
    were lost (a blackholed link looks exactly like this)."""


@define
class LoopDeadlines:
    """Bounds on waits for Redis counted in time this loop ran.  A trio deadline fires at the
    first pass after a synchronous stall of the loop (CPU-bound accepts, handshakes), before the
    reader task that has the reply in its socket runs: a stall longer than ``command_timeout``
    looked like a Redis that did not answer, and ended the session.  Here a watchdog wakes every
    ``tick`` and adds how late it woke (the loop did not run) to every armed bound, so only time
    the loop ran counts; the bounds are checked only when it wakes, after the readers had a pass."""

    _armed: dict[trio.CancelScope, float] = field(factory=dict, init=False)
    running: bool = field(default=False, init=False)

    @contextmanager
    def bound(self, timeout: float) -> Iterator[trio.CancelScope]:
        """A cancel scope cancelled once ``timeout`` s of loop time passed (see ``cancelled_caught``)."""
        with trio.CancelScope() as scope:
            self.arm(scope, timeout)
            try:
                yield scope
            finally:
                self._armed.pop(scope, None)

    def arm(self, scope: trio.CancelScope, timeout: float) -> None:
        if self.running:
            self._armed[scope] = trio.current_time() + timeout
        else:  # no watchdog (not under RedisBroker.run): a plain deadline
            scope.deadline = trio.current_time() + timeout

    def disarm(self, scope: trio.CancelScope) -> None:
        self._armed.pop(scope, None)
        scope.deadline = math.inf

    async def run(self, tick: Callable[[], float]) -> None:
        self.running = True
        try:
            while True:
                due = trio.current_time() + tick()
                await trio.sleep_until(due)
                now = trio.current_time()
                late = max(0.0, now - due)
                for scope, deadline in list(self._armed.items()):
                    deadline += late
                    if now >= deadline:
                        del self._armed[scope]
                        scope.cancel()
                    else:
                        self._armed[scope] = deadline
        finally:
            self.running = False


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@define
class RedisBroker:
    hub: Hub
    now: Callable[[], Instant]
    url: str
    prefix: str
    node_id: str
    max_pending: int = 10000
    node_stats: Callable[[], dict[str, Any]] = lambda: {}
    """What this node tells the others about itself (clients, port), every few seconds."""
    command_timeout: float = 0.5
    """Seconds any one Redis call may take (``[broker] command_timeout``)."""
    ping_interval: float = 1.0
    publish_timeout: float = 2.0
    """Seconds :meth:`publish` (the HTTP API) waits for the outcome."""
    alert_record: int = 1000
    """ALERT seqs Redis keeps per topic (``[broker] alert_record``; see :data:`~uipd.cluster.scripts.PUBLISH_SCRIPT`)."""
    history_batch: int = 64
    """Recoveries read from Redis in one call at most (``[broker] history_batch``)."""
    history_queue: int = 10000
    """Recoveries waiting for a read at most (``[broker] history_queue``)."""
    kind: str = "redis"
    ready: bool = field(default=False, init=False)
    client: Any = field(default=None, init=False)
    """The connected coredis client while the broker is connected (leases use it)."""
    losses: AlertLosses = field(factory=AlertLosses, init=False)
    keys: Keys = field(init=False)
    outbox: Outbox = field(init=False)
    """The publications on their way to Redis."""
    _sessions: int = field(default=0, init=False)
    nodes: NodeList = field(init=False)
    """The cluster's nodes as this one last saw them."""
    history: RedisHistory = field(init=False)
    """Reads history from Redis for recovering clients (the hub's ``history_reader``)."""
    _retired: set[tuple[str, str]] = field(factory=set, init=False)
    """(topic, epoch) of the runs this node moved on from: their messages still in the channel are stale."""
    caught_up: int = field(default=0, init=False)
    """Messages this node missed while cut off and fanned out from the history streams once back."""
    _leases: dict[str, str] = field(factory=dict, init=False)
    """Lease name (a leader source's name) -> the token this node holds it with: a fresh one per
    acquisition, so a publication from an earlier tenure is fenced off even if the lease came back."""
    deadlines: LoopDeadlines = field(factory=LoopDeadlines, init=False)
    """Every wait on Redis is bounded through these: a stall of this loop is not Redis' silence."""

    def __attrs_post_init__(self) -> None:
        self.keys = Keys(self.prefix)
        hub = self.hub
        self.outbox = Outbox(
            self.keys, self.node_id, self.losses, self.max_pending, self.publish_timeout, self.alert_record, lambda: hub.settings.history_size
        )
        self.nodes = NodeList(self.keys.key("nodes"), self.node_id, self.node_stats)
        self.history = RedisHistory(hub, self.keys, self.now, self.history_batch, self.history_queue)
        hub.history_reader = self.history

    @property
    def lost_alerts(self) -> Counter[tuple[str, str]]:
        """(topic or "", reason) -> ALERTs lost or possibly lost (see :data:`~uipd.cluster.losses.LOST_REASONS`)."""
        return self.losses.lost_alerts

    @property
    def missed(self) -> Counter[str]:
        """Topic -> messages missed while cut off that may have been ALERTs (see :class:`~uipd.cluster.losses.AlertLosses`)."""
        return self.losses.missed

    # -- publishing -----------------------------------------------------------------------------------

    def submit(self, pub: Publication, source: str = "", on_lost: Callable[[], None] | None = None) -> PublishResult:
        """Queue a publication for the cluster (a source's call): its seq is known only once Redis
        assigned it, so the result carries none.  If it is then lost (refused, no answer, its
        source's lease gone), the log names ``source`` and ``on_lost`` is called."""
        self._check(pub)
        return self.outbox.submit(pub, self.now().iso, source, self._leases.get(source, "") if source else "", on_lost)

    async def publish(self, pub: Publication) -> PublishResult:
        """Publish and wait until the message came back through Redis and was fanned out here (the
        HTTP API's call; see :meth:`Outbox.publish <uipd.cluster.outbox.Outbox.publish>`)."""
        self._check(pub)
        return await self.outbox.publish(pub, self.now().iso)

    def _check(self, pub: Publication) -> None:
        if pub.topic is not None and pub.topic not in self.hub.topics:
            raise UnknownTopic(pub.topic)
        if not self.ready:
            raise PublishError("broker_unavailable", "the cluster broker (Redis) is not reachable", http_status=503)

    # -- receiving ------------------------------------------------------------------------------------

    def _apply(self, data: bytes, loaded: dict[str, int], count_join: bool) -> bool:
        """Fan a channel message out here.  False: it is of an epoch this node does not have (the
        caller reloads, then applies it again)."""
        seq, epoch, msg, data_json = decode_message(data)
        topic = msg["t"]
        if topic is not None:
            state = self.hub.topics.get(topic)
            if state is None:
                return True  # a topic this node does not offer
            if epoch != state.epoch:
                # A run this node left behind (a message sent before the reload that saw the new
                # epoch): stale.  Any other: Redis' epoch changed under this node.
                return (topic, epoch) in self._retired
            if seq is not None and seq <= loaded.get(topic, 0):
                # Already in the state this node loaded, or caught up with; an ALERT is no state:
                # on a first load with clients connected, counted and logged, not silent (a client
                # that comes later recovers it from the history stream).  Back from a cut-off, the
                # ALERT record counted it already (``count_missed``), or the catch-up delivered it.
                if msg["k"] == "ALERT" and count_join:
                    self.losses.count(topic, seq, "join")
                return True
        self.outbox.came_back(msg["id"], self._fan_out(msg, data_json, seq))
        return True

    def _fan_out(self, msg: dict[str, Any], data_json: bytes, seq: int | None) -> PublishResult:
        pub = publish.decoded(msg["k"], msg["t"], data_json, tuple(msg["r"]), msg["b"])
        return self.hub.publish(pub, Instant(self.now().mono, msg["ts"]), seq=seq)

    async def _seed_state(self, client: Any) -> bool:
        """Write this node's state into an empty Redis (nothing happens if Redis has a state)."""
        keys, args = seed_call(self.keys, self.hub.topics)
        return bool(await self._call(client.eval(SEED_SCRIPT, keys=keys, args=args), "the state write-back"))

    async def _load_state(self, client: Any, back: bool) -> list[LoadedTopic]:
        """Every topic's seq, epoch and state or, coming back (``back``: this node gives its own
        seqs and epochs), the messages it missed when the history stream holds them all."""
        keys, args = load_call(self.keys, self.hub.topics, back, new_epoch(), self.hub.settings.max_replay)
        reply = await self._call(client.eval(LOAD_SCRIPT, keys=keys, args=args), "the state load")
        return list(loaded_topics(self.hub.topics.names, reply))

    async def _sync(self, client: Any, back: bool) -> dict[str, int]:
        """Load the cluster's state (``back``: this node had it, and may have missed messages):
        each topic caught up from its history stream, or reloaded; clients resynced when a topic
        was reloaded under them.  Returns the seqs loaded (the channel's messages up to them are
        in what was applied)."""
        hub = self.hub
        had_clients = bool(hub.sessions)
        before = {name: (state.seq, state.epoch) for name, state in hub.topics.topics.items()}
        topics = await self._load_state(client, back)
        loaded: dict[str, int] = {}
        reloaded: dict[str, int] = {}
        records: dict[str, tuple[int, list[int]]] = {}
        caught_up = 0
        for t in topics:
            loaded[t.name] = t.seq
            seq, epoch = before[t.name]
            if t.covered:
                for entry in t.entries:  # in seq order: the very messages, as live (the same frames)
                    msg, data_json = decode_body(entry.body)
                    self._fan_out(msg, data_json, entry.seq)
                caught_up += len(t.entries)
                continue
            if t.epoch != epoch:
                self._retired.add((t.name, epoch))
            hub.load_topic(t.name, t.entities, t.seq, epoch=t.epoch)
            if not back:
                continue
            floor = t.floor
            if t.epoch != epoch:
                if t.seq < seq:
                    log.warning(
                        "cluster broker: topic %s: Redis has seq %d, behind this node's %d under its epoch (a failover to a replica "
                        "that lagged?): a new epoch, %s; clients recovering from before get a snapshot and alertsLost", t.name, t.seq, seq, t.epoch,
                    )
                else:
                    log.warning("cluster broker: topic %s: a new epoch in Redis (%s; it lost the topic's data?), seq %d", t.name, t.epoch, t.seq)
                # The new run is new to this node from its start; the ALERTs its record holds are
                # counted, but no seq of it is "of unknown kind": the old run's are unknowable
                # (the warning above says so), and a seeded run's first seqs are this node's own.
                seq = floor = 0
            reloaded[t.name], records[t.name] = seq, (floor, t.alerts)
        self.caught_up += caught_up
        resynced = hub.resync_all() if (reloaded or not back) and had_clients else 0
        if back:
            log.info(
                "cluster broker: back; %d missed message(s) fanned out from the history; %s; %d client(s) resynced",
                caught_up, f"reloaded: {', '.join(reloaded)}" if reloaded else "no topic reloaded", resynced,
            )
            self.losses.count_missed(reloaded, {n: loaded[n] for n in reloaded}, records)
        return loaded

    # -- lifetime ---------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis for the daemon's life: retry with backoff, resync on recovery.
        Logs once per change of state (up, down), not once per attempt."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.deadlines.run, lambda: self.command_timeout / 4)
            task_status.started()
            await self._run()

    async def _run(self) -> None:
        backoff = Backoff(0.5, 5.0)
        reported_down = False

        def up() -> None:
            nonlocal reported_down
            reported_down = False
            backoff.reset()
            log.info("cluster broker: connected to %s as node %s", self.url, self.node_id)

        while True:
            try:
                await self._session(on_up=up)
            # coredis reports a lost connection as its own errors, anyio's or OSError, often in an
            # exception group (and may add one while cancelled): any Exception ends this session only.
            except* Exception as group:
                if not reported_down:
                    reported_down = True
                    first = _first(group)  # some of coredis's errors have no text (an AssertionError): then its type
                    log.error("cluster broker: Redis unreachable (%s); retrying, clients stay connected", str(first) or type(first).__name__)
            self.ready, self.client = False, None
            await trio.sleep(backoff.next())

    async def _session(self, on_up: Callable[[], None]) -> None:
        timeout = self.command_timeout
        # No retries inside coredis: a command retried after a timeout could publish twice, and a
        # subscriber that reconnects by itself would miss messages without the resync below.  No
        # timeouts inside coredis either (its stream timeout and its subscriber keepalive are
        # wall-clock deadlines, tripped by a stall of this loop): every wait is bounded by
        # self.deadlines, the subscription here, each command in _call, and _ping_loop PINGs the
        # subscriber connection too, so a silent subscriber still ends the session.
        setup = trio.CancelScope()
        with setup:
            self.deadlines.arm(setup, timeout)
            async with (
                coredis.Redis.from_url(self.url, connect_timeout=timeout, retry_policy=NoRetryPolicy()) as client,
                client.pubsub(
                    channels=[self.keys.channel], retry_policy=NoRetryPolicy(), subscription_timeout=60 * timeout, max_idle_seconds=math.inf
                ) as pubsub,
            ):
                self.deadlines.disarm(setup)
                await self._subscribed(client, pubsub, on_up)
        if setup.cancelled_caught:
            raise BrokerTimeout(f"Redis did not answer the subscription within {timeout} s")

    async def _subscribed(self, client: Any, pubsub: Any, on_up: Callable[[], None]) -> None:
        """The session once subscribed: load (or catch up), then publish, receive and PING until it fails."""
        back = self._sessions > 0
        if back and await self._seed_state(client):
            log.warning("cluster broker: Redis had lost the cluster's state; this node wrote its own back (under new epochs)")
        count_join = not back and bool(self.hub.sessions)
        loaded = await self._sync(client, back)
        self._sessions += 1
        self.client = client
        self.ready = True
        on_up()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outbox.run, client, self._call)
                nursery.start_soon(self.nodes.run, client, self._call)
                nursery.start_soon(self._ping_loop, client, pubsub)
                nursery.start_soon(self.history.run, client, self._call)
                async for message in pubsub:
                    if message["type"] == "message" and not self._apply(message["data"], loaded, count_join):
                        # Another epoch: reloaded here (the channel's messages wait meanwhile)
                        # like a node coming back, then the message is applied or skipped.
                        loaded = await self._sync(client, back=True)
                        self._apply(message["data"], loaded, count_join=False)
        finally:  # not ready from the moment the session fails, not once its connections are closed
            self.ready, self.client = False, None

    async def _call(self, request: Awaitable[T], what: str) -> T:
        """Every Redis call goes through here: bounded by ``command_timeout`` of loop time (``deadlines``)."""
        with self.deadlines.bound(self.command_timeout):
            return await request
        raise BrokerTimeout(f"Redis did not answer {what} within {self.command_timeout} s")

    async def _ping_loop(self, client: Any, pubsub: Any) -> None:
        """Ends the session (raises) when Redis stops answering, on the command connection or the
        subscriber's, so the node is not ready while it cannot publish or receive, and catches up
        once Redis answers again."""
        while True:
            await trio.sleep(self.ping_interval)
            await self._call(client.ping(), "PING")
            await self._call(pubsub.connection.create_request(b"PING"), "the subscriber's PING")

    # -- the cluster view ---------------------------------------------------------------------------------

    def cluster_stats(self) -> dict[str, Any]:
        history = self.history
        return {
            "broker": "redis", "node": self.node_id, "connected": self.ready, "nodes": self.nodes.view(),
            "history": {"reads": history.reads, "queued": history.queued, "unread": history.unread, "caughtUp": self.caught_up},
        }

    # -- leases (used to run a source on one node of the cluster) ----------------------------------------

    # A lease's value is this node's id and a token new to each acquisition: the publications of
    # the source carry the token, and scripts.PUBLISH_SCRIPT drops those whose token is no longer the value.

    async def acquire(self, name: str, ttl: float) -> bool:
        if self.client is None:
            return False
        token = f"{self.node_id}:{os.urandom(6).hex()}"
        request = self.client.set(self.keys.key("lease", name), token, px=int(ttl * 1000), condition=coredis.PureToken.NX)
        held = bool(await self._call(request, f"the lease {name}"))
        if held:
            self._leases[name] = token
        return held

    async def renew(self, name: str, ttl: float) -> bool:
        token = self._leases.get(name)
        if self.client is None or token is None:
            return False
        request = self.client.eval(RENEW_SCRIPT, keys=[self.keys.key("lease", name)], args=[token, int(ttl * 1000)])
        held = bool(await self._call(request, f"the renewal of lease {name}"))
        if not held:
            self._leases.pop(name, None)
        return held

    async def release(self, name: str) -> None:
        token = self._leases.pop(name, None)  # given up here whether or not Redis hears of it
        if self.client is not None and token is not None:
            await self._call(self.client.eval(RELEASE_SCRIPT, keys=[self.keys.key("lease", name)], args=[token]), f"the release of lease {name}")
