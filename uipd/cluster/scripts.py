"""The Lua scripts the Redis broker runs, and the encoding of their arguments and answers.

Each script is one atomic step on Redis (Redis runs a script as a whole, one at a time); the
functions below build its KEYS and ARGV from this node's objects and read its reply, so the layout
described above each script is written and read in this module only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from attrs import frozen

from uipd.core.publish import entity_key

if TYPE_CHECKING:
    from uipd.cluster.outbox import Pending
    from uipd.core.topics import TopicTable


@frozen
class Keys:
    """The names of the cluster's keys in Redis, all under ``prefix`` (``[broker] prefix``)."""

    prefix: str

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        """The channel every publication goes through."""
        return self.key("messages")


# One call publishes a batch.  Redis runs a script as a whole, so a lost connection never leaves a
# batch partly executed (as it can a pipeline), and the reply says what became of each publication.
# KEYS: seq hash, channel, the ALERT record floors, then the state hash and ALERT record of each
# topic and the lease of each leader source in the batch.  ARGV: the number of publications, the
# ALERT record's bound, then for each: topic ('' for none), kind, body, index of its state hash in
# KEYS, of its topic's ALERT record (0: not an ALERT), index of its source's lease in KEYS (0: none) and the token this node
# holds it with, number of upserts, id/json pairs, number of removed ids, the ids.  Returns for
# each publication its seq (0: no topic), or the error Redis gave for one of its commands (then it
# was not published), or LEASE_LOST_ERROR.  The lease is checked in the same script (a fence): a
# publication queued while its node was cut off never lands after the new holder's.
#
# The ALERT record: a list per topic of the seqs of its newest ALERTs (at most the bound: trimmed
# here, oldest first), so a node back from a cut-off can tell which seqs it missed were ALERTs.
# Its floor (a hash, topic -> seq) is the lowest seq from which the record has every ALERT: the
# first seq published with a record (HSETNX: a Redis that lost its data, or had none, starts one
# afresh), then one past the newest seq trimmed.
PUBLISH_SCRIPT = """
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    error(reply.err, 0)
  end
  return reply
end
local out = {}
local bound = tonumber(ARGV[2])
local pos = 3
for p = 1, tonumber(ARGV[1]) do
  local topic, kind, body, state = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], KEYS[tonumber(ARGV[pos + 3])]
  local record = KEYS[tonumber(ARGV[pos + 4])]
  local lease, token = tonumber(ARGV[pos + 5]), ARGV[pos + 6]
  local ups, nups = pos + 8, tonumber(ARGV[pos + 7])
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
      call('HSETNX', KEYS[3], topic, seq)
      for i = 0, nups - 1 do
        call('HSET', state, ARGV[ups + 2 * i], ARGV[ups + 2 * i + 1])
      end
      for i = 0, nrems - 1 do
        call('HDEL', state, ARGV[rems + i])
      end
      if record then  -- (after the commands that may fail: only what is published is recorded)
        local n = call('RPUSH', record, seq)
        if n > bound then
          call('HSET', KEYS[3], topic, tonumber(call('LINDEX', record, n - bound - 1)) + 1)
          call('LTRIM', record, n - bound, -1)
        end
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

# KEYS: seq hash, ALERT record floors, then per topic its state hash and ALERT record.  ARGV: per
# topic its name and the seq this node had (-1: a first load, no record wanted).  Returns per
# topic: seq, entities, and (when the seq is past this node's) the record's floor and the seqs of
# the ALERTs after this node's seq it still holds: read in the same atomic call as the state.
LOAD_SCRIPT = """
local out = {}
for i = 1, #ARGV, 2 do
  local topic, after, t = ARGV[i], tonumber(ARGV[i + 1]), (i + 1) / 2
  local seq = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
  local floor, alerts = seq + 1, {}
  if after >= 0 and seq > after then
    floor = tonumber(redis.call('HGET', KEYS[2], topic) or floor)
    for _, s in ipairs(redis.call('LRANGE', KEYS[2 * t + 2], 0, -1)) do
      if tonumber(s) > after then
        alerts[#alerts + 1] = tonumber(s)
      end
    end
  end
  out[#out + 1] = {seq, redis.call('HGETALL', KEYS[2 * t + 1]), floor, alerts}
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

LEASE_LOST_ERROR = "LEASE_LOST"
"""PUBLISH_SCRIPT's reply for a publication whose source's lease this node no longer holds."""


def publish_call(keys: Keys, alert_record: int, batch: Sequence[Pending]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of PUBLISH_SCRIPT for ``batch`` (``alert_record``: the ALERT record's bound)."""
    script_keys = [keys.key("seq"), keys.channel, keys.key("alert-floor")]
    indexes: dict[str, int] = {}

    def index(key: str) -> int:  # (Lua's 1-based index in KEYS, each key once)
        if key not in indexes:
            script_keys.append(key)
            indexes[key] = len(script_keys)
        return indexes[key]

    args: list[Any] = [len(batch), alert_record]
    for item in batch:
        pub = item.pub
        topic = pub.topic or ""
        state = index(keys.key("state", topic)) if topic else 0
        record = index(keys.key("alerts", topic)) if topic and pub.kind == "ALERT" else 0
        lease = index(keys.key("lease", item.source)) if item.lease else 0
        # The data goes as the publication's own bytes after a newline (compact JSON has none):
        # encoded once where it was validated, decoded once on each node.
        body = orjson.dumps(
            {"id": item.pub_id, "k": pub.kind, "t": pub.topic, "r": list(pub.removed), "b": pub.broadcast, "ts": item.ts}
        ) + b"\n" + pub.data_json
        upserts = pub.upserts
        args += [topic, pub.kind, body, state, record, lease, item.lease, len(upserts)]
        for key, entity in upserts:
            args += [key, orjson.dumps(entity)]
        args.append(len(pub.removed))
        args += pub.removed
    return script_keys, args


def publish_outcome(reply: Any) -> int | str:
    """One publication's answer in PUBLISH_SCRIPT's reply: its seq (0: no topic), or the error
    that kept it from being published (:data:`LEASE_LOST_ERROR` among them)."""
    if isinstance(reply, int):
        return reply
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def decode_message(data: bytes) -> tuple[int | None, dict[str, Any], bytes]:
    """A message from the channel: its seq (None: no topic), its header, its data's JSON."""
    seq_text, _, body = data.partition(b" ")
    header, _, data_json = body.partition(b"\n")
    return int(seq_text) or None, orjson.loads(header), data_json


def seed_call(keys: Keys, topics: TopicTable) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of SEED_SCRIPT: this node's state and seqs."""
    names = topics.names
    args: list[Any] = [len(names)]
    for topic in names:
        state = topics.topics[topic]
        args += [topic, state.seq, len(state.entities)]
        for key, entity in state.entities.items():
            args += [key, orjson.dumps(entity)]
    return [keys.key("seq")] + [keys.key("state", t) for t in names], args


def load_call(keys: Keys, names: Sequence[str], before: dict[str, int] | None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of LOAD_SCRIPT for ``names`` (``before``: the seqs this node had, when it
    comes back; None on a first load, which wants no ALERT record)."""
    script_keys = [keys.key("seq"), keys.key("alert-floor")]
    args: list[Any] = []
    for topic in names:
        script_keys += [keys.key("state", topic), keys.key("alerts", topic)]
        args += [topic, -1 if before is None else before.get(topic, 0)]
    return script_keys, args


def loaded_topics(names: Sequence[str], reply: Any) -> Iterator[tuple[str, list[tuple[str, Any]], int, int, list[int]]]:
    """LOAD_SCRIPT's reply, per topic: its name, its entities by key, its seq, the ALERT record's
    floor and the seqs of the ALERTs it still holds after this node's seq."""
    for topic, (seq, flat, floor, alerts) in zip(names, reply):
        entities = [orjson.loads(flat[j + 1]) for j in range(0, len(flat), 2)]
        yield topic, [(entity_key(e), e) for e in entities], seq, floor, alerts
