"""The Redis broker: every node publishes through Redis and fans out locally.

One Lua script per publish assigns the topic's ``seq`` (HINCRBY), applies the UPDATE to the
topic's state hash and PUBLISHes the message, atomically; Redis runs scripts one at a time and
delivers a channel's messages in order, so every node sees every topic's messages in one order
with one seq.  A node subscribes first, then loads the state and seqs (one script), then applies
the channel's messages whose seq is newer than what it loaded: no gap, no duplicate.  When Redis
is lost the node keeps its clients, reports not ready, retries with backoff and, once back,
reloads the state and sends every client a ``"resync": true`` SNAPSHOT, since it may have missed
messages.

Every wait on Redis is bounded (``command_timeout``; a PING every ``ping_interval`` finds a Redis
that stopped answering): a timeout ends the session, exactly like a lost connection.  Publications
go as one script call per batch, so a batch is never partly executed, and each publication's
outcome is known: published (with its seq), refused, or unknown (sent, no answer).  An ALERT that
this node's clients did not get, or that may not have been published, is counted
(``lost_alerts``, the metric ``uipd_alerts_lost_total``) and logged with its topic and seq.

Client: coredis 6 (anyio, so it runs on trio; pinned).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import coredis
import orjson
import trio
from attrs import define, field
from coredis.retry import NoRetryPolicy

from uipd.core.clock import Instant
from uipd.core.errors import PublishError, UnknownTopic
from uipd.core.hub import Hub, PublishResult
from uipd.core import publish
from uipd.core.publish import Publication, entity_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# One call publishes a batch.  Redis runs a script as a whole, so a lost connection never leaves a
# batch partly executed (as it can a pipeline), and the reply says what became of each publication.
# KEYS: seq hash, channel, then the state hash of each topic and the lease of each leader source in
# the batch.  ARGV: the number of publications, then for each: topic ('' for none), kind, body,
# index of its state hash in KEYS, index of its source's lease in KEYS (0: none) and the token this
# node holds it with, number of upserts, id/json pairs, number of removed ids, the ids.  Returns for
# each publication its seq (0: no topic), or the error Redis gave for one of its commands (then it
# was not published), or LEASE_LOST_ERROR.  The lease is checked in the same script (a fence): a
# publication queued while its node was cut off never lands after the new holder's.
PUBLISH_SCRIPT = """
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    error(reply.err, 0)
  end
  return reply
end
local out = {}
local pos = 2
for p = 1, tonumber(ARGV[1]) do
  local topic, kind, body, state = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], KEYS[tonumber(ARGV[pos + 3])]
  local lease, token = tonumber(ARGV[pos + 4]), ARGV[pos + 5]
  local ups, nups = pos + 7, tonumber(ARGV[pos + 6])
  local rems = ups + 2 * nups + 1
  local nrems = tonumber(ARGV[rems - 1])
  pos = rems + nrems
  local ok, res = pcall(function()
    if lease > 0 and redis.call('GET', KEYS[lease]) ~= token then
      error('LEASE_LOST', 0)
    end
    local seq = 0
    if topic ~= '' then
      seq = call('HINCRBY', KEYS[1], topic, 1)
      for i = 0, nups - 1 do
        call('HSET', state, ARGV[ups + 2 * i], ARGV[ups + 2 * i + 1])
      end
      for i = 0, nrems - 1 do
        call('HDEL', state, ARGV[rems + i])
      end
    end
    call('PUBLISH', KEYS[2], seq .. ' ' .. body)
    return seq
  end)
  if ok then
    out[p] = res
  else
    out[p] = tostring(res)
  end
end
return out
"""

# KEYS: seq hash, then one state hash per topic.  ARGV: the topics.  Returns seq, entities, ...
LOAD_SCRIPT = """
local out = {}
for i, topic in ipairs(ARGV) do
  out[#out + 1] = redis.call('HGET', KEYS[1], topic) or '0'
  out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
end
return out
"""

# After Redis lost its data (a restart without persistence), the first node back writes its own
# state and seqs so the cluster's state survives.  KEYS: seq hash, then one state hash per topic.
# ARGV: n topics, then per topic: name, seq, number of entities, id/json pairs.
SEED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local pos = 2
for t = 1, tonumber(ARGV[1]) do
  local topic, seq, n = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  redis.call('HSET', KEYS[1], topic, seq)
  for i = 0, n - 1 do
    redis.call('HSET', KEYS[t + 1], ARGV[pos + 3 + 2 * i], ARGV[pos + 4 + 2 * i])
  end
  pos = pos + 3 + 2 * n
end
return 1
"""

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

LOST_REASONS = {
    "join": "published while this node (re)loaded the cluster's state, which no ALERT is part of: this node's clients did not get it",
    "publish_failed": "not published: Redis refused it",
    "publish_unknown": "sent to Redis, which did not answer: it may or may not have been published",
    "not_sent": "not sent to Redis within publish_timeout: not published",
    "lease_lost": "not published: its source's lease had passed from this node (to another, or expired) before it reached Redis",
}
"""The ``reason`` label of ``uipd_alerts_lost_total``, and what each means (logged with the ALERT)."""

LEASE_LOST_ERROR = "LEASE_LOST"
"""PUBLISH_SCRIPT's reply for a publication whose source's lease this node no longer holds."""


class BrokerTimeout(TimeoutError):
    """Redis did not answer within ``command_timeout``: the session is over, as if the connection
    were lost (a blackholed link looks exactly like this)."""


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


_State = Literal["queued", "sent", "published", "failed", "unknown", "withdrawn"]


@define(eq=False)
class _Pending:
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
    kind: str = "redis"
    ready: bool = field(default=False, init=False)
    client: Any = field(default=None, init=False)
    """The connected coredis client while the broker is connected (leases use it)."""
    lost_alerts: Counter[tuple[str, str]] = field(factory=Counter, init=False)
    """(topic or "", reason) -> ALERTs lost or possibly lost (see :data:`LOST_REASONS`)."""
    missed: Counter[str] = field(factory=Counter, init=False)
    """Topic -> messages published while this node was cut off from Redis (see ``_count_missed``)."""
    _send: trio.MemorySendChannel[_Pending] = field(init=False)
    _receive: trio.MemoryReceiveChannel[_Pending] = field(init=False)
    _ids: Any = field(factory=itertools.count, init=False)
    _waiters: dict[str, _Pending] = field(factory=dict, init=False)
    """The HTTP API's publications, by id, while it waits for them."""
    _sessions: int = field(default=0, init=False)
    _cluster: dict[str, Any] = field(factory=dict, init=False)
    _leases: dict[str, str] = field(factory=dict, init=False)
    """Lease name (a leader source's name) -> the token this node holds it with: a fresh one per
    acquisition, so a publication from an earlier tenure is fenced off even if the lease came back."""

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(self.max_pending)

    # -- keys ---------------------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        return self.key("messages")

    # -- publishing -----------------------------------------------------------------------------------

    def submit(self, pub: Publication, source: str = "", on_lost: Callable[[], None] | None = None) -> PublishResult:
        """Queue a publication for the cluster (a source's call): its seq is known only once Redis
        assigned it, so the result carries none.  If it is then lost (refused, no answer, its
        source's lease gone), the log names ``source`` and ``on_lost`` is called."""
        self._enqueue(pub, source).on_lost = on_lost
        return PublishResult(None, 0)

    async def publish(self, pub: Publication) -> PublishResult:
        """Publish and wait (at most ``publish_timeout``) until the message came back through
        Redis and was fanned out here (the HTTP API's call): the result has the cluster's seq and
        this node's recipients.  The answer is the truth about this one message: a result when it
        was published (recipients 0 if it has not come back here yet), 503 when it was not,
        504 ``publish_unknown`` when it was sent and Redis did not answer."""
        item = self._enqueue(pub, "")
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

    def _enqueue(self, pub: Publication, source: str) -> _Pending:
        if pub.topic is not None and pub.topic not in self.hub.topics:
            raise UnknownTopic(pub.topic)
        if not self.ready:
            raise PublishError("broker_unavailable", "the cluster broker (Redis) is not reachable", http_status=503)
        item = _Pending(f"{self.node_id}:{next(self._ids)}", pub, self.now().iso, source, self._leases.get(source, "") if source else "")
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            raise PublishError("broker_busy", f"more than {self.max_pending} publications wait for Redis", http_status=503) from None
        return item

    def _batch_args(self, batch: list[_Pending]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of PUBLISH_SCRIPT for ``batch``."""
        keys = [self.key("seq"), self.channel]
        indexes: dict[str, int] = {}

        def index(key: str) -> int:  # (Lua's 1-based index in KEYS, each key once)
            if key not in indexes:
                keys.append(key)
                indexes[key] = len(keys)
            return indexes[key]

        args: list[Any] = [len(batch)]
        for item in batch:
            pub = item.pub
            topic = pub.topic or ""
            state = index(self.key("state", topic)) if topic else 0
            lease = index(self.key("lease", item.source)) if item.lease else 0
            # The data goes as the publication's own bytes after a newline (compact JSON has none):
            # encoded once where it was validated, decoded once on each node.
            body = orjson.dumps(
                {"id": item.pub_id, "k": pub.kind, "t": pub.topic, "r": list(pub.removed), "b": pub.broadcast, "ts": item.ts}
            ) + b"\n" + pub.data_json
            upserts = pub.upserts
            args += [topic, pub.kind, body, state, lease, item.lease, len(upserts)]
            for key, entity in upserts:
                args += [key, orjson.dumps(entity)]
            args.append(len(pub.removed))
            args += pub.removed
        return keys, args

    async def _send_loop(self, client: Any) -> None:
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < 256:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = [item for item in batch if item.state == "queued"]  # not withdrawn by the API
            if not batch:
                continue
            keys, args = self._batch_args(batch)
            for item in batch:
                item.state = "sent"
            try:
                replies = await self._call(client.eval(PUBLISH_SCRIPT, keys=keys, args=args), "a publish")
            except coredis.exceptions.ResponseError as exc:  # refused as a whole (out of memory, ...): nothing ran
                self._settle(batch, "failed", str(exc))
                continue
            except BaseException as exc:  # timeout, lost connection, cancelled: sent, no answer
                self._settle(batch, "unknown", str(exc) or type(exc).__name__)
                raise
            refused: dict[str, list[_Pending]] = {}
            for item, reply in zip(batch, replies):
                if isinstance(reply, int):
                    if item.state == "sent":  # (else it came back through the channel already)
                        item.state, item.seq = "published", reply or None
                        item.answered.set()
                else:
                    refused.setdefault(reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply), []).append(item)
            for error, items in refused.items():
                if error == LEASE_LOST_ERROR:
                    self._settle(items, "failed", "their source's lease is no longer this node's", "lease_lost")
                else:
                    self._settle(items, "failed", error)

    def _settle(self, items: list[_Pending], state: Literal["failed", "unknown"], error: str, reason: str = "") -> None:
        """``items`` were refused by Redis (``failed``) or got no answer (``unknown``): tell whoever
        waits, and count and log every ALERT among them (``reason``: see :data:`LOST_REASONS`)."""
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

    def _lost(self, item: _Pending, reason: str) -> None:
        if item.on_lost is not None:
            item.on_lost()
        if item.pub.kind == "ALERT":
            self._count_lost(item.pub.topic, item.seq, reason, f" from {f'source {item.source}' if item.source else 'the HTTP API'}")

    def _count_lost(self, topic: str | None, seq: int | None, reason: str, origin: str) -> None:
        """One ALERT lost, or possibly lost: counted, and logged with its topic and seq."""
        self.lost_alerts[(topic or "", reason)] += 1
        log.warning("ALERT of topic %s (seq %s)%s: %s", topic or "(none)", seq if seq is not None else "unassigned", origin, LOST_REASONS[reason])

    def _count_missed(self, before: dict[str, int], loaded: dict[str, int]) -> None:
        """Messages published while this node was cut off from Redis never reached it: the resync
        SNAPSHOT carries their UPDATEs' effect, but an ALERT among them is lost, and which of them
        were ALERTs is not known here (no history yet).  Counted and logged per topic, not silent."""
        for topic, seq in loaded.items():
            gap = seq - before.get(topic, 0)
            if gap > 0:
                self.missed[topic] += gap
                log.warning(
                    "cluster broker: topic %s: %d message(s) (seq %d-%d) were published while this node was cut off from Redis; "
                    "its clients get their state in the resync, any ALERTs among them are lost", topic, gap, seq - gap + 1, seq,
                )

    # -- receiving ------------------------------------------------------------------------------------

    def _apply(self, data: bytes, loaded: dict[str, int]) -> None:
        seq_text, _, body = data.partition(b" ")
        header, _, data_json = body.partition(b"\n")
        msg = orjson.loads(header)
        topic = msg["t"]
        seq = int(seq_text) or None
        if topic is not None:
            if topic not in self.hub.topics:
                return  # a topic this node does not offer
            if seq is not None and seq <= loaded.get(topic, 0):
                # Already in the state this node loaded, except an ALERT, which is no state
                # (history to recover it from is for later): counted and logged, not silent.
                if msg["k"] == "ALERT":
                    self._count_lost(topic, seq, "join", "")
                return
        pub = publish.decoded(msg["k"], topic, data_json, tuple(msg["r"]), msg["b"])
        now = self.now()
        result = self.hub.publish(pub, Instant(now.mono, msg["ts"]), seq=seq)
        item = self._waiters.get(msg["id"])
        if item is not None:
            item.state, item.seq, item.result = "published", result.seq, result
            item.answered.set()
            item.applied.set()

    async def _seed_state(self, client: Any) -> bool:
        """Write this node's state into an empty Redis (nothing happens if Redis has a state)."""
        topics = self.hub.topics.names
        args: list[Any] = [len(topics)]
        for topic in topics:
            state = self.hub.topics.topics[topic]
            args += [topic, state.seq, len(state.entities)]
            for key, entity in state.entities.items():
                args += [key, orjson.dumps(entity)]
        keys = [self.key("seq")] + [self.key("state", t) for t in topics]
        return bool(await self._call(client.eval(SEED_SCRIPT, keys=keys, args=args), "the state write-back"))

    async def _load_state(self, client: Any) -> dict[str, int]:
        topics = self.hub.topics.names
        keys = [self.key("seq")] + [self.key("state", t) for t in topics]
        reply = await self._call(client.eval(LOAD_SCRIPT, keys=keys, args=topics), "the state load")
        loaded: dict[str, int] = {}
        for i, topic in enumerate(topics):
            seq = int(reply[2 * i])
            flat = reply[2 * i + 1]
            entities = [orjson.loads(flat[j + 1]) for j in range(0, len(flat), 2)]
            self.hub.load_topic(topic, [(entity_key(e), e) for e in entities], seq)
            loaded[topic] = seq
        return loaded

    # -- lifetime ---------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis for the daemon's life: retry with backoff, resync on recovery.
        Logs once per change of state (up, down), not once per attempt."""
        task_status.started()
        backoff = 0.5
        reported_down = False

        def up() -> None:
            nonlocal reported_down, backoff
            reported_down, backoff = False, 0.5
            log.info("cluster broker: connected to %s as node %s", self.url, self.node_id)

        while True:
            try:
                await self._session(on_up=up)
            # coredis reports a lost connection as its own errors, anyio's or OSError, often in an
            # exception group (and may add one while cancelled): any Exception ends this session only.
            except* Exception as group:
                if not reported_down:
                    reported_down = True
                    log.error("cluster broker: Redis unreachable (%s); retrying, clients stay connected", _first(group))
            self.ready, self.client = False, None
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _session(self, on_up: Callable[[], None]) -> None:
        timeout = self.command_timeout
        # No retries inside coredis: a command retried after a timeout could publish twice, and a
        # subscriber that reconnects by itself would miss messages without the resync below.  Its
        # keepalive PINGs the subscriber connection when idle for ping_interval (bounded by the
        # stream timeout), so a silent subscriber ends the session too.
        async with (
            coredis.Redis.from_url(self.url, stream_timeout=timeout, connect_timeout=timeout, retry_policy=NoRetryPolicy()) as client,
            client.pubsub(
                channels=[self.channel], retry_policy=NoRetryPolicy(), subscription_timeout=timeout, max_idle_seconds=self.ping_interval
            ) as pubsub,
        ):
            if self._sessions and await self._seed_state(client):
                log.warning("cluster broker: Redis had lost the cluster's state; this node wrote its own back")
            before = {topic: state.seq for topic, state in self.hub.topics.topics.items()}
            loaded = await self._load_state(client)
            if self._sessions:
                # messages may have been missed while Redis was away: every client starts over
                resynced = self.hub.resync_all()
                log.info("cluster broker: back; %d client(s) resynced", resynced)
                self._count_missed(before, loaded)
            self._sessions += 1
            self.client = client
            self.ready = True
            on_up()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_loop, client)
                    nursery.start_soon(self._announce_loop, client)
                    nursery.start_soon(self._ping_loop, client)
                    async for message in pubsub:
                        if message["type"] == "message":
                            self._apply(message["data"], loaded)
            finally:  # not ready from the moment the session fails, not once its connections are closed
                self.ready, self.client = False, None

    async def _call(self, request: Awaitable[T], what: str) -> T:
        """Every Redis call goes through here: bounded by ``command_timeout``."""
        with trio.move_on_after(self.command_timeout):
            return await request
        raise BrokerTimeout(f"Redis did not answer {what} within {self.command_timeout} s")

    async def _ping_loop(self, client: Any) -> None:
        """Ends the session (raises) when Redis stops answering, so the node is not ready while it
        cannot publish or receive, and resyncs its clients once Redis answers again."""
        while True:
            await trio.sleep(self.ping_interval)
            await self._call(client.ping(), "PING")

    # -- the cluster view ---------------------------------------------------------------------------------

    async def _announce_loop(self, client: Any) -> None:
        nodes_key = self.key("nodes")
        while True:
            info = {"ts": time.time(), **self.node_stats()}
            await self._call(client.hset(nodes_key, {self.node_id: orjson.dumps(info)}), "the node announce")
            raw = await self._call(client.hgetall(nodes_key), "the node list")
            now = time.time()
            view = {}
            for node, blob in raw.items():
                entry = orjson.loads(blob)
                if now - entry.get("ts", 0) < 10:
                    view[node.decode() if isinstance(node, bytes) else node] = entry
                else:
                    await self._call(client.hdel(nodes_key, [node]), "the node list cleanup")
            self._cluster = view
            await trio.sleep(2.0)

    def cluster_stats(self) -> dict[str, Any]:
        return {
            "broker": "redis",
            "node": self.node_id,
            "connected": self.ready,
            "nodes": {n: {k: v for k, v in e.items() if k != "ts"} for n, e in self._cluster.items()},
        }

    # -- leases (used to run a source on one node of the cluster) ----------------------------------------

    # A lease's value is this node's id and a token new to each acquisition: the publications of
    # the source carry the token, and PUBLISH_SCRIPT drops those whose token is no longer the value.

    async def acquire(self, name: str, ttl: float) -> bool:
        if self.client is None:
            return False
        token = f"{self.node_id}:{os.urandom(6).hex()}"
        request = self.client.set(self.key("lease", name), token, px=int(ttl * 1000), condition=coredis.PureToken.NX)
        held = bool(await self._call(request, f"the lease {name}"))
        if held:
            self._leases[name] = token
        return held

    async def renew(self, name: str, ttl: float) -> bool:
        token = self._leases.get(name)
        if self.client is None or token is None:
            return False
        request = self.client.eval(RENEW_SCRIPT, keys=[self.key("lease", name)], args=[token, int(ttl * 1000)])
        held = bool(await self._call(request, f"the renewal of lease {name}"))
        if not held:
            self._leases.pop(name, None)
        return held

    async def release(self, name: str) -> None:
        token = self._leases.pop(name, None)  # given up here whether or not Redis hears of it
        if self.client is not None and token is not None:
            await self._call(self.client.eval(RELEASE_SCRIPT, keys=[self.key("lease", name)], args=[token]), f"the release of lease {name}")
