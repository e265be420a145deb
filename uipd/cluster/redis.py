"""The Redis broker: every node publishes through Redis and fans out locally.

One Lua script per publish assigns the topic's ``seq`` (HINCRBY), applies the UPDATE to the
topic's state hash and PUBLISHes the message, atomically; Redis runs scripts one at a time and
delivers a channel's messages in order, so every node sees every topic's messages in one order
with one seq.  A node subscribes first, then loads the state and seqs (one script), then applies
the channel's messages whose seq is newer than what it loaded: no gap, no duplicate.  When Redis
is lost the node keeps its clients, reports not ready, retries with backoff and, once back,
reloads the state and sends every client a ``"resync": true`` SNAPSHOT, since it may have missed
messages.

Client: coredis 6 (anyio, so it runs on trio; pinned).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import coredis
import orjson
import trio
from attrs import define, field

from uipd.core.clock import Instant
from uipd.core.errors import PublishError, UnknownTopic
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication, entity_key

log = logging.getLogger(__name__)

# KEYS: state hash of the topic, seq hash, channel.  ARGV: topic ('' for none), kind, body,
# number of upserts, then id/json pairs, then removed ids.
PUBLISH_SCRIPT = """
local topic = ARGV[1]
local seq = 0
if topic ~= '' then
  seq = redis.call('HINCRBY', KEYS[2], topic, 1)
  if ARGV[2] == 'UPDATE' then
    local n = tonumber(ARGV[4])
    for i = 0, n - 1 do
      redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
    end
    for i = 5 + 2 * n, #ARGV do
      redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
redis.call('PUBLISH', KEYS[3], seq .. ' ' .. ARGV[3])
return seq
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

_REDIS_ERRORS = (coredis.exceptions.RedisError, OSError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError)


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@define
class _Waiter:
    event: trio.Event = field(factory=trio.Event)
    result: PublishResult | None = None


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
    kind: str = "redis"
    ready: bool = field(default=False, init=False)
    client: Any = field(default=None, init=False)
    """The connected coredis client while the broker is connected (leases use it)."""
    _send: trio.MemorySendChannel[tuple[str, Publication, str]] = field(init=False)
    _receive: trio.MemoryReceiveChannel[tuple[str, Publication, str]] = field(init=False)
    _ids: Any = field(factory=itertools.count, init=False)
    _waiters: dict[str, _Waiter] = field(factory=dict, init=False)
    _sessions: int = field(default=0, init=False)
    _cluster: dict[str, Any] = field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(self.max_pending)

    # -- keys ---------------------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        return self.key("messages")

    # -- publishing -----------------------------------------------------------------------------------

    def submit(self, pub: Publication) -> PublishResult:
        """Queue a publication for the cluster (a source's call): its seq is known only once Redis
        assigned it, so the result carries none."""
        self._enqueue(pub)
        return PublishResult(None, 0)

    async def publish(self, pub: Publication) -> PublishResult:
        """Publish and wait until the message came back through Redis and was fanned out here
        (the HTTP API's call): the result has the cluster's seq and this node's recipients."""
        pub_id = self._enqueue(pub)
        waiter = self._waiters[pub_id] = _Waiter()
        try:
            with trio.move_on_after(10):
                await waiter.event.wait()
        finally:
            self._waiters.pop(pub_id, None)
        if waiter.result is None:
            raise PublishError("broker_unavailable", "the message could not be confirmed by the cluster", http_status=503)
        return waiter.result

    def _enqueue(self, pub: Publication) -> str:
        if pub.topic is not None and pub.topic not in self.hub.topics:
            raise UnknownTopic(pub.topic)
        if not self.ready:
            raise PublishError("broker_unavailable", "the cluster broker (Redis) is not reachable", http_status=503)
        pub_id = f"{self.node_id}:{next(self._ids)}"
        try:
            self._send.send_nowait((pub_id, pub, self.now().iso))
        except trio.WouldBlock:
            raise PublishError("broker_busy", f"more than {self.max_pending} publications wait for Redis", http_status=503) from None
        return pub_id

    def _script_args(self, pub_id: str, pub: Publication, ts: str) -> tuple[list[str], list[Any]]:
        body = orjson.dumps(
            {"id": pub_id, "k": pub.kind, "t": pub.topic, "d": pub.data, "r": list(pub.removed), "b": pub.broadcast, "ts": ts}
        )
        topic = pub.topic or ""
        args: list[Any] = [topic, pub.kind, body]
        if pub.kind == "UPDATE":
            upserts = pub.upserts
            args.append(len(upserts))
            for key, entity in upserts:
                args += [key, orjson.dumps(entity)]
            args += list(pub.removed)
        else:
            args.append(0)
        keys = [self.key("state", topic), self.key("seq"), self.channel]
        return keys, args

    async def _send_loop(self, client: Any) -> None:
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < 256:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for pub_id, pub, ts in batch:
                        keys, args = self._script_args(pub_id, pub, ts)
                        pipe.eval(PUBLISH_SCRIPT, keys=keys, args=args)
            except _REDIS_ERRORS:
                log.warning("%d publication(s) were not sent to Redis", len(batch))
                for pub_id, _, _ in batch:
                    waiter = self._waiters.get(pub_id)
                    if waiter is not None:
                        waiter.event.set()
                raise

    # -- receiving ------------------------------------------------------------------------------------

    def _apply(self, data: bytes, loaded: dict[str, int]) -> None:
        seq_text, _, body = data.partition(b" ")
        msg = orjson.loads(body)
        topic = msg["t"]
        seq = int(seq_text) or None
        if topic is not None:
            state = self.hub.topics.get(topic)
            if state is None or (seq is not None and seq <= loaded.get(topic, 0)):
                return  # a topic this node does not offer, or already in the state it loaded
        pub = Publication(msg["k"], topic, msg["d"], tuple(msg["r"]), msg["b"])
        now = self.now()
        result = self.hub.publish(pub, Instant(now.mono, msg["ts"]), seq=seq)
        waiter = self._waiters.get(msg["id"])
        if waiter is not None:
            waiter.result = result
            waiter.event.set()

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
        return bool(await client.eval(SEED_SCRIPT, keys=keys, args=args))

    async def _load_state(self, client: Any) -> dict[str, int]:
        topics = self.hub.topics.names
        keys = [self.key("seq")] + [self.key("state", t) for t in topics]
        reply = await client.eval(LOAD_SCRIPT, keys=keys, args=topics)
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
        async with coredis.Redis.from_url(self.url) as client, client.pubsub(channels=[self.channel]) as pubsub:
            if self._sessions and await self._seed_state(client):
                log.warning("cluster broker: Redis had lost the cluster's state; this node wrote its own back")
            loaded = await self._load_state(client)
            if self._sessions:
                # messages may have been missed while Redis was away: every client starts over
                resynced = self.hub.resync_all()
                log.info("cluster broker: back; %d client(s) resynced", resynced)
            self._sessions += 1
            self.client = client
            self.ready = True
            on_up()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, client)
                nursery.start_soon(self._announce_loop, client)
                async for message in pubsub:
                    if message["type"] == "message":
                        self._apply(message["data"], loaded)

    # -- the cluster view ---------------------------------------------------------------------------------

    async def _announce_loop(self, client: Any) -> None:
        nodes_key = self.key("nodes")
        while True:
            info = {"ts": time.time(), **self.node_stats()}
            await client.hset(nodes_key, {self.node_id: orjson.dumps(info)})
            raw = await client.hgetall(nodes_key)
            now = time.time()
            view = {}
            for node, blob in raw.items():
                entry = orjson.loads(blob)
                if now - entry.get("ts", 0) < 10:
                    view[node.decode() if isinstance(node, bytes) else node] = entry
                else:
                    await client.hdel(nodes_key, [node])
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

    async def acquire(self, name: str, ttl: float) -> bool:
        if self.client is None:
            return False
        return bool(await self.client.set(self.key("lease", name), self.node_id, px=int(ttl * 1000), condition=coredis.PureToken.NX))

    async def renew(self, name: str, ttl: float) -> bool:
        if self.client is None:
            return False
        return bool(await self.client.eval(RENEW_SCRIPT, keys=[self.key("lease", name)], args=[self.node_id, int(ttl * 1000)]))

    async def release(self, name: str) -> None:
        if self.client is not None:
            await self.client.eval(RELEASE_SCRIPT, keys=[self.key("lease", name)], args=[self.node_id])
