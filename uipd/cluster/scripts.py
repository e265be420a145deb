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


# The keys every script below starts its KEYS with: the seq hash (topic -> seq), the ALERT record
# floors (topic -> seq), the epoch hash (topic -> epoch: the name of the topic's run of seqs,
# PROTOCOL.md section 8).  A topic's epoch is made (by the node calling, ARGV's candidate) only
# where none is stored, and replaced only by a new run; a new run drops the topic's history stream
# and ALERT record, which describe seqs of the old run.
_NEW_RUN = """
local function new_run(topic, epoch, stream, record)
  redis.call('HSET', KEYS[3], topic, epoch)
  redis.call('DEL', stream, record)
  redis.call('HDEL', KEYS[2], topic)
end
"""

# One call publishes a batch.  Redis runs a script as a whole, so a lost connection never leaves a
# batch partly executed (as it can a pipeline), and the reply says what became of each publication.
# KEYS: seq hash, ALERT record floors, epoch hash, channel, then the state hash, ALERT record and
# history stream of each topic and the lease of each leader source in the batch.  ARGV: the number
# of publications, the ALERT record's bound, the history's size (0: none kept), a candidate epoch,
# then for each: topic ('' for none), kind, body, index in KEYS of its topic's state hash, ALERT
# record and history stream (0 each without a topic), index of its source's lease in KEYS (0:
# none) and the token this node holds it with, number of upserts, id/json pairs, number of removed
# ids, the ids.  Returns for each publication its seq (0: no topic), or the error Redis gave for
# one of its commands (then it was not published), or LEASE_LOST_ERROR.  The lease is checked in
# the same script (a fence): a publication queued while its node was cut off never lands after the
# new holder's.  The channel message is "<seq> <epoch> <body>" ("0 - <body>" without a topic).
#
# The ALERT record: a list per topic of the seqs of its newest ALERTs (at most the bound: trimmed
# here, oldest first), so a node back from a cut-off can tell which seqs it missed were ALERTs.
# Its floor (a hash, topic -> seq) is the lowest seq from which the record has every ALERT: the
# first seq published with a record (HSETNX: a Redis that lost its data, or had none, starts one
# afresh), then one past the newest seq trimmed.
#
# The history: a stream per topic, one entry per message with the ID "<seq>-0" (so XRANGE by seq
# is exact), the body (what the channel carries: every node rebuilds the very frame from it) and
# the Redis time in ms (for [history] ttl), trimmed to about the size (MAXLEN ~).  Written in the
# same call that assigns the seq, after the commands that may fail: seq, state and history change
# together.  A stream already past the seq (seq went back under the same epoch) starts a new run.
PUBLISH_SCRIPT = _NEW_RUN + """
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    error(reply.err, 0)
  end
  return reply
end
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
local bound, size, candidate = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local pos = 5
for p = 1, tonumber(ARGV[1]) do
  local topic, kind, body, state = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], KEYS[tonumber(ARGV[pos + 3])]
  local record, stream = KEYS[tonumber(ARGV[pos + 4])], KEYS[tonumber(ARGV[pos + 5])]
  local lease, token = tonumber(ARGV[pos + 6]), ARGV[pos + 7]
  local ups, nups = pos + 9, tonumber(ARGV[pos + 8])
  local rems = ups + 2 * nups + 1
  local nrems = tonumber(ARGV[rems - 1])
  pos = rems + nrems
  local ok, res = pcall(function()
    if lease > 0 and redis.call('GET', KEYS[lease]) ~= token then
      error('LEASE_LOST', 0)
    end
    local seq, epoch = 0, '-'
    if topic ~= '' then
      seq = call('HINCRBY', KEYS[1], topic, 1)
      epoch = redis.call('HGET', KEYS[3], topic)
      if not epoch then
        epoch = candidate
        new_run(topic, epoch, stream, record)
      end
      for i = 0, nups - 1 do
        call('HSET', state, ARGV[ups + 2 * i], ARGV[ups + 2 * i + 1])
      end
      for i = 0, nrems - 1 do
        call('HDEL', state, ARGV[rems + i])
      end
      -- (after the commands that may fail: only what is published is kept and recorded)
      if size > 0 then
        local added = redis.pcall('XADD', stream, 'MAXLEN', '~', size, seq .. '-0', 'm', body, 'at', ms)
        if type(added) == 'table' and added.err then
          epoch = candidate .. 'r' .. seq  -- (new to this call, even if its candidate was used above)
          new_run(topic, epoch, stream, record)
          call('XADD', stream, 'MAXLEN', '~', size, seq .. '-0', 'm', body, 'at', ms)
        end
      end
      call('HSETNX', KEYS[2], topic, seq)
      if kind == 'ALERT' then
        local n = call('RPUSH', record, seq)
        if n > bound then
          call('HSET', KEYS[2], topic, tonumber(call('LINDEX', record, n - bound - 1)) + 1)
          call('LTRIM', record, n - bound, -1)
        end
      end
    end
    call('PUBLISH', KEYS[4], seq .. ' ' .. epoch .. ' ' .. body)
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

# KEYS: seq hash, ALERT record floors, epoch hash, then per topic its state hash, ALERT record and
# history stream.  ARGV: a candidate epoch, the most messages a catch-up takes, then per topic its
# name, the seq this node had (-1: a first load, no record wanted) and its epoch.  Per topic, in
# the same atomic call:
# - no epoch stored: one is made (a new run);
# - the node's epoch with a seq behind the node's (a failover to a replica that lagged: seqs would
#   repeat under one epoch, and a client could be replayed the wrong messages): a new run, in this
#   call, so every node that loads after it sees the new epoch (a compare-and-set on the epoch);
# - coming back under the same epoch with at most the bound missed and the stream holding every one
#   of them: "covered", the stream's entries (the node fans them out instead of a resync) and no
#   state (the node's own, plus those messages, is Redis');
# - else the state, and (coming back) the ALERT record's floor and the ALERT seqs after the node's
#   seq (after 0 under a new epoch: the whole run is new to the node).
# Returns per topic {seq, state (flat id/json pairs), floor, alert seqs, epoch, covered, entries}.
LOAD_SCRIPT = _NEW_RUN + """
local candidate, bound = ARGV[1], tonumber(ARGV[2])
local out = {}
local t = 0
for i = 3, #ARGV, 3 do
  t = t + 1
  local topic, after, mine = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local state, record, stream = KEYS[3 * t + 1], KEYS[3 * t + 2], KEYS[3 * t + 3]
  local seq = tonumber(redis.call('HGET', KEYS[1], topic) or '0')
  local epoch = redis.call('HGET', KEYS[3], topic)
  if not epoch or (epoch == mine and after > seq) then
    epoch = candidate
    new_run(topic, epoch, stream, record)
  end
  local floor, alerts, covered, entries = seq + 1, {}, 0, {}
  if after >= 0 then
    local base = after
    if epoch ~= mine then
      base = 0
    end
    if seq > base then
      floor = tonumber(redis.call('HGET', KEYS[2], topic) or floor)
      for _, s in ipairs(redis.call('LRANGE', record, 0, -1)) do
        if tonumber(s) > base then
          alerts[#alerts + 1] = tonumber(s)
        end
      end
    end
    if epoch == mine then
      if seq == after then
        covered = 1
      elseif seq - after <= bound then
        entries = redis.call('XRANGE', stream, (after + 1) .. '-0', seq .. '-0')
        if #entries == seq - after and entries[1][1] == (after + 1) .. '-0' then
          covered = 1
        else
          entries = {}
        end
      end
    end
  end
  local flat = {}
  if covered == 0 then
    flat = redis.call('HGETALL', state)
  end
  out[#out + 1] = {seq, flat, floor, alerts, epoch, covered, entries}
end
return out
"""

# Reads history for recovering clients (a batch of them).  KEYS: seq hash, ALERT record floors,
# epoch hash, then history streams.  ARGV: [history] ttl in ms, then per range: topic, index of
# its stream in KEYS, first and last seq, the epoch the range is of.  Returns per range 0 when the
# topic's epoch is no longer that one (its stream is of another run), else {the Redis time in ms,
# the entries no older than the ttl}: the node checks that they are every seq it asked for.
READ_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local oldest = now - tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 5 do
  local topic, stream, first, last, epoch = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('HGET', KEYS[3], topic) ~= epoch then
    out[#out + 1] = 0
  else
    local kept = {}
    for _, entry in ipairs(redis.call('XRANGE', stream, first .. '-0', last .. '-0')) do
      local fields = entry[2]
      for f = 1, #fields, 2 do
        if fields[f] == 'at' and tonumber(fields[f + 1]) >= oldest then
          kept[#kept + 1] = entry
        end
      end
    end
    out[#out + 1] = {now, kept}
  end
end
return out
"""

# After Redis lost its data (a restart without persistence), the first node back writes its own
# state and seqs so the cluster's state survives; not its epochs, nor any history: the load that
# follows makes a new epoch per topic, so no client is ever replayed across the loss.  KEYS: as
# LOAD_SCRIPT's.  ARGV: n topics, then per topic: name, seq, number of entities, id/json pairs.
# Lost data is no seq hash and no epoch hash: a cluster that loaded but never published has epochs
# and no seq hash, and taking it for a loss made every reconnect rotate the epochs and resync all.
SEED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
local pos = 2
for t = 1, tonumber(ARGV[1]) do
  local topic, seq, n = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  redis.call('HSET', KEYS[1], topic, seq)
  redis.call('DEL', KEYS[3 * t + 2], KEYS[3 * t + 3])
  for i = 0, n - 1 do
    redis.call('HSET', KEYS[3 * t + 1], ARGV[pos + 3 + 2 * i], ARGV[pos + 4 + 2 * i])
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


def _common_keys(keys: Keys) -> list[str]:
    """The KEYS every script starts with (see ``_NEW_RUN``)."""
    return [keys.key("seq"), keys.key("alert-floor"), keys.key("epoch")]


def topic_keys(keys: Keys, topic: str) -> list[str]:
    """A topic's state hash, ALERT record and history stream."""
    return [keys.key("state", topic), keys.key("alerts", topic), keys.key("history", topic)]


def publish_call(keys: Keys, alert_record: int, history_size: int, epoch: str, batch: Sequence[Pending]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of PUBLISH_SCRIPT for ``batch`` (``alert_record``: the ALERT record's bound;
    ``history_size``: the stream's, 0 for none; ``epoch``: a fresh one, used where a topic has none)."""
    script_keys = [*_common_keys(keys), keys.channel]
    indexes: dict[str, int] = {}

    def index(key: str) -> int:  # (Lua's 1-based index in KEYS, each key once)
        if key not in indexes:
            script_keys.append(key)
            indexes[key] = len(script_keys)
        return indexes[key]

    args: list[Any] = [len(batch), alert_record, history_size, epoch]
    for item in batch:
        pub = item.pub
        topic = pub.topic or ""
        state, record, stream = (index(k) for k in topic_keys(keys, topic)) if topic else (0, 0, 0)
        lease = index(keys.key("lease", item.source)) if item.lease else 0
        # The data goes as the publication's own bytes after a newline (compact JSON has none):
        # encoded once where it was validated, decoded once on each node.
        body = orjson.dumps(
            {"id": item.pub_id, "k": pub.kind, "t": pub.topic, "r": list(pub.removed), "b": pub.broadcast, "ts": item.ts}
        ) + b"\n" + pub.data_json
        upserts = pub.upserts
        args += [topic, pub.kind, body, state, record, stream, lease, item.lease, len(upserts)]
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


def decode_body(body: bytes) -> tuple[dict[str, Any], bytes]:
    """A publication's body (in the channel and in the history stream): its header, its data's JSON."""
    header, _, data_json = body.partition(b"\n")
    return orjson.loads(header), data_json


def decode_message(data: bytes) -> tuple[int | None, str | None, dict[str, Any], bytes]:
    """A message from the channel: its seq and its topic's epoch (None: no topic), its header,
    its data's JSON."""
    seq_text, _, rest = data.partition(b" ")
    epoch, _, body = rest.partition(b" ")
    header, data_json = decode_body(body)
    seq = int(seq_text) or None
    return seq, epoch.decode() if seq is not None else None, header, data_json


@frozen
class StreamEntry:
    """One message as the history stream holds it."""

    seq: int
    body: bytes
    """What the channel carried (``decode_body``)."""
    age: float = 0.0
    """Seconds since it was published, by Redis' clock (0: not asked)."""


def _entries(raw: Any, now_ms: int | None = None) -> list[StreamEntry]:
    """XRANGE's reply ([id, [field, value, ...]] each) as entries."""
    out = []
    for entry_id, flat in raw:
        fields = dict(zip(flat[::2], flat[1::2]))
        age = 0.0 if now_ms is None else max(0, now_ms - int(fields[b"at"])) / 1000
        out.append(StreamEntry(int(entry_id.partition(b"-")[0]), fields[b"m"], age))
    return out


def seed_call(keys: Keys, topics: TopicTable) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of SEED_SCRIPT: this node's state and seqs."""
    names = topics.names
    args: list[Any] = [len(names)]
    script_keys = _common_keys(keys)
    for topic in names:
        state = topics.topics[topic]
        script_keys += topic_keys(keys, topic)
        args += [topic, state.seq, len(state.entities)]
        for key, entity in state.entities.items():
            args += [key, orjson.dumps(entity)]
    return script_keys, args


def load_call(keys: Keys, topics: TopicTable, back: bool, epoch: str, catch_up: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of LOAD_SCRIPT for every topic (``back``: this node comes back and gives its
    seqs and epochs; else a first load, which wants no ALERT record nor catch-up; ``epoch``: a
    fresh one, for a new run; ``catch_up``: the most messages a catch-up takes)."""
    script_keys = _common_keys(keys)
    args: list[Any] = [epoch, catch_up]
    for topic, state in topics.topics.items():
        script_keys += topic_keys(keys, topic)
        args += [topic, state.seq if back else -1, state.epoch]
    return script_keys, args


@frozen
class LoadedTopic:
    """One topic in LOAD_SCRIPT's reply."""

    name: str
    seq: int
    epoch: str
    covered: bool
    """The node comes back under the same epoch and ``entries`` are every message it missed (or
    it missed none): it keeps its state and applies them; ``entities`` is empty then."""
    entries: list[StreamEntry]
    entities: list[tuple[str, Any]]
    floor: int
    """The ALERT record's floor (coming back)."""
    alerts: list[int]
    """The seqs of the ALERTs the record holds after this node's seq (coming back)."""


def loaded_topics(names: Sequence[str], reply: Any) -> Iterator[LoadedTopic]:
    """LOAD_SCRIPT's reply, per topic."""
    for topic, (seq, flat, floor, alerts, epoch, covered, raw) in zip(names, reply):
        entities = [orjson.loads(flat[j + 1]) for j in range(0, len(flat), 2)]
        yield LoadedTopic(
            topic, seq, epoch.decode() if isinstance(epoch, bytes) else epoch, bool(covered), _entries(raw),
            [(entity_key(e), e) for e in entities], floor, list(alerts),
        )


@frozen
class HistoryRange:
    """Messages ``first``..``last`` of ``topic``'s run ``epoch``, to read from its stream."""

    topic: str
    first: int
    last: int
    epoch: str


def read_call(keys: Keys, ttl: float, ranges: Sequence[HistoryRange]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of READ_SCRIPT."""
    script_keys = _common_keys(keys)
    args: list[Any] = [int(ttl * 1000)]
    streams: dict[str, int] = {}
    for r in ranges:
        if r.topic not in streams:
            script_keys.append(keys.key("history", r.topic))
            streams[r.topic] = len(script_keys)
        args += [r.topic, streams[r.topic], r.first, r.last, r.epoch]
    return script_keys, args


def read_reply(reply: Any) -> list[list[StreamEntry] | None]:
    """READ_SCRIPT's reply, per range: its entries no older than the ttl, None when the topic's
    epoch is no longer the range's."""
    return [None if item == 0 else _entries(item[1], item[0]) for item in reply]
