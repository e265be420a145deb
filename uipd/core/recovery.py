"""Recovery on reconnect (PROTOCOL.md section 8): a client names the last position it applied per
topic (``since``), and is answered with one SNAPSHOT (sections of the topics it cannot be replayed)
followed by the messages it missed, byte for byte as first sent.

The answer is decided per topic from the topic's history (:mod:`uipd.core.history`) and queued as
one unit (:meth:`OutboundQueue.release`).  With a remote history (the Redis broker's), a topic whose
local history does not reach back is read later: the client's queue is *held* at the moment of the
request, so live messages queued meanwhile wait behind the answer, the replay ends exactly at the
seq the topic had then, and the live messages follow with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from attrs import define, field, frozen

from uipd.core import wire
from uipd.core.admission import BAD_QUERY, FORBIDDEN_TOPIC, Refusal
from uipd.core.clock import Instant
from uipd.core.counters import HubCounters
from uipd.core.errors import ClientError
from uipd.core.history import HistoryEntry
from uipd.core.sessions import Session
from uipd.core.subscriptions import ALL
from uipd.core.topics import TopicState, TopicTable

REPLAYED = "replayed"
EPOCH_CHANGED = "epoch_changed"
TOO_OLD = "too_old"
TOO_MANY = "too_many"
OUTCOMES = (REPLAYED, EPOCH_CHANGED, TOO_OLD, TOO_MANY)
"""A recovered topic's outcome, as counted (``uipd_recoveries_total{outcome}``)."""

REPLAY_BYTES_FLOOR = 64 * 1024
"""A replay may always be this large; past it, it must not outweigh the topic's snapshot section
(the bytes rule: a replay larger than what it replaces is answered with the section)."""



@frozen
class Position:
    """A topic's state after its message ``seq`` of the run ``epoch``."""

    seq: int
    epoch: str


def parse_since(value: Any, known: Container[str]) -> dict[str, Position]:
    """A ``since`` object (``{topic: {"seq": S, "epoch": E}}``) as positions; raises ClientError
    ``bad_request`` when it is malformed, ``unknown_topic`` when it names a topic not offered."""
    if not isinstance(value, dict):
        raise ClientError("bad_request", '"since" must be an object of topic -> {"seq": S, "epoch": E}')
    since: dict[str, Position] = {}
    for name, pos in value.items():
        seq = pos.get("seq") if isinstance(pos, dict) else None
        epoch = pos.get("epoch") if isinstance(pos, dict) else None
        if type(seq) is not int or not 0 <= seq < 2**53 or not isinstance(epoch, str) or len(epoch) > 256:
            raise ClientError("bad_request", f'"since" of {name[:64]!r} must be {{"seq": <integer >= 0>, "epoch": "<string>"}}')
        since[name] = Position(seq, epoch)
    unknown = [n for n in since if n not in known]
    if unknown:
        raise ClientError("unknown_topic", 'unknown topic(s) in "since": ' + ", ".join(unknown), topics=unknown)
    return since


@frozen
class HandshakeAsk:
    """What a handshake URL asks for: ``?topics=a,b`` (the first subscription set) and
    ``?since=<JSON>`` (positions to recover)."""

    topics: tuple[str, ...] | None = None
    since: dict[str, Position] | None = None


NO_ASK = HandshakeAsk()


_asked: dict[tuple[str, frozenset[str] | None, int | None], HandshakeAsk] = {}
"""Handshake queries already parsed and accepted: clients cut together come back with the same
URL, and unquoting it was the largest cost of a reconnect storm.  A hit is checked again against
the topics offered (cheap; several hubs may share a process, e.g. in tests)."""
MAX_CACHED_ASKS = 256


def parse_handshake_query(
    target: str, topic_names: Container[str], allowed_topics: frozenset[str] | None, max_subscriptions: int | None = None
) -> HandshakeAsk | Refusal:
    """The ``topics`` and ``since`` of a handshake's target (path and query): 400 when malformed
    or naming an unknown topic (or more than ``max_subscriptions``), 403 outside the JWT claim."""
    _, _, query = target.partition("?")
    if "topics=" not in query and "since=" not in query:
        return NO_ASK
    key = (query, allowed_topics, max_subscriptions)
    ask = _asked.get(key)
    if ask is not None and not (
        all(t == ALL or t in topic_names for t in ask.topics or ()) and all(t in topic_names for t in ask.since or ())
    ):
        ask = None
    if ask is None:
        parsed = _parse_query(query, topic_names, allowed_topics, max_subscriptions)
        if isinstance(parsed, Refusal):
            return parsed
        if len(_asked) >= MAX_CACHED_ASKS:
            _asked.clear()
        ask = _asked[key] = parsed
    return ask


def _parse_query(
    query: str, topic_names: Container[str], allowed_topics: frozenset[str] | None, max_subscriptions: int | None
) -> HandshakeAsk | Refusal:
    params = parse_qs(query, keep_blank_values=True)
    topics: tuple[str, ...] | None = None
    if "topics" in params:
        topics = tuple(dict.fromkeys(t.strip() for v in params["topics"] for t in v.split(",") if t.strip()))
        if any(t != ALL and t not in topic_names for t in topics):
            return BAD_QUERY
        if max_subscriptions is not None and len(topics) > max_subscriptions:
            return BAD_QUERY
        if allowed_topics is not None and any(t == ALL or t not in allowed_topics for t in topics):
            return FORBIDDEN_TOPIC
    since: dict[str, Position] | None = None
    if "since" in params:
        if len(params["since"]) != 1:
            return BAD_QUERY
        try:
            since = parse_since(orjson.loads(params["since"][0]), topic_names)
        except (orjson.JSONDecodeError, ClientError):
            return BAD_QUERY
    return HandshakeAsk(topics, since)


@frozen
class TopicPlan:
    outcome: str
    entries: Sequence[HistoryEntry] = ()
    """Replayed (``REPLAYED``)."""
    alerts: Sequence[bytes] = ()
    """The gap's ALERT payloads (``TOO_MANY``)."""

    @property
    def recovered(self) -> bool:
        return self.outcome == REPLAYED


def plan_topic(
    state: TopicState, pos: Position, upto: int, entries: Sequence[HistoryEntry] | None, max_replay: int, now: float
) -> TopicPlan:
    """One topic's outcome for a client at ``pos``, the topic having been at seq ``upto`` when
    the client asked (its queue holds every message after that): ``entries`` are the messages
    (pos.seq, upto] if known (None: history does not reach back)."""
    if pos.epoch != state.epoch or pos.seq > upto:
        return TopicPlan(EPOCH_CHANGED)
    if pos.seq == upto:
        return TopicPlan(REPLAYED)
    if entries is None or len(entries) != upto - pos.seq or (entries and entries[0].seq != pos.seq + 1):
        return TopicPlan(TOO_OLD)
    if len(entries) <= max_replay:
        size = sum(len(e.frame) for e in entries)
        if size <= REPLAY_BYTES_FLOOR or size <= len(state.section()):
            return TopicPlan(REPLAYED, entries)
    alerts = [wire.frame_payload(e.frame) for e in entries if e.alert]
    if upto < state.seq:
        # Answered later than asked (remote history): the section is of now, so the ALERTs since
        # the ask, waiting behind the answer, come before its position and the client skips them.
        later = state.history.after(upto, now)
        if later is None or len(later) != state.seq - upto:
            return TopicPlan(TOO_OLD)
        alerts += [wire.frame_payload(e.frame) for e in later if e.alert]
    return TopicPlan(TOO_MANY, alerts=alerts)


def local_entries(state: TopicState, seq: int, upto: int, now: float) -> list[HistoryEntry] | None:
    """The messages (seq, upto] from this node's history, None when it does not hold them all."""
    entries = state.history.after(seq, now)
    if entries is None:
        return None
    if entries and entries[-1].seq > upto:
        entries = [e for e in entries if e.seq <= upto]
    return entries if len(entries) == upto - seq else None


@define(eq=False)
class PendingRecovery:
    """A recovery answer waiting for history read elsewhere (``HistoryReader``)."""

    session: Session
    since_by_topic: dict[str, Position]
    """Every topic to recover, with the client's position."""
    upto_by_topic: dict[str, int]
    """Each topic's seq when the client asked: its queue holds every later message."""
    sections: list[str] = field(factory=list)
    """Topics that get a section whatever happens (no position given)."""
    remote: dict[str, tuple[int, int]] = field(factory=dict)
    """The topics to read: (since, upto], the seqs of the entries wanted."""
    local: dict[str, list[HistoryEntry] | None] = field(factory=dict)
    """What this node's history held for the other topics when the client asked (taken then:
    history may be trimmed meanwhile)."""


class HistoryReader(Protocol):
    def request(self, pending: PendingRecovery) -> None:
        """Read ``pending.remote`` (later, asynchronously) and call ``Hub.complete_recovery``."""


@frozen
class _Answer:
    frames: list[bytes]
    size: int
    outcomes: tuple[tuple[str, int], ...]
    """(outcome, messages replayed) per topic, counted again at each reuse."""
    built_at: float
    version: int


_AnswerKey = tuple[tuple[tuple[str, int, str], ...], tuple[str, ...], int]

MAX_CACHED_ANSWERS = 64


@define
class Recoveries:
    """Answers recovery requests for the hub (connect and subscribe with ``since``).

    Answers are cached like SNAPSHOT frames (while no topic changed, and for the snapshot cache's
    age at most): when a deploy or a balancer cuts every client at once they come back with the
    same positions, and the storm costs one answer, not one per client."""

    topics: TopicTable
    counters: HubCounters
    max_replay: Callable[[], int]
    reader: HistoryReader | None = None
    _cache: dict[_AnswerKey, _Answer] = field(factory=dict)

    def respond(
        self,
        session: Session,
        since: Mapping[str, Position],
        sections: Sequence[str],
        now: Instant,
        charge: Callable[[int], None] | None = None,
    ) -> None:
        """Queue the answer to ``since`` (positions of topics in the client's set) plus ``sections``;
        or, when some topic needs remote history, hold the queue and ask the reader.  ``charge``
        is given the answer's bytes first (a subscribe's snapshot budget: it raises to refuse)."""
        table = self.topics
        key = (tuple((n, p.seq, p.epoch) for n, p in since.items()), tuple(sections), self.max_replay())
        cached = self._cache.get(key)
        if cached is not None and cached.version == table.version and now.mono - cached.built_at <= table.snapshot_max_age:
            if charge is not None:
                charge(cached.size)
            self._count(cached.outcomes)
            session.outbound.release(cached.frames, cached.size, held=False)
            return
        topics = table.topics
        upto = {name: topics[name].seq for name in since}
        remote: dict[str, tuple[int, int]] = {}
        fetched: dict[str, list[HistoryEntry] | None] = {}
        for name, pos in since.items():
            state = topics[name]
            if pos.epoch == state.epoch and pos.seq < state.seq:
                entries = local_entries(state, pos.seq, state.seq, now.mono)
                if entries is None and self.reader is not None:
                    remote[name] = (pos.seq, state.seq)
                fetched[name] = entries
        if remote:
            local = {n: e for n, e in fetched.items() if n not in remote}
            pending = PendingRecovery(session, dict(since), upto, list(sections), remote, local)
            if charge is not None:
                # Charged before the read, as if every topic read ended as a section (what it
                # will be when history does not cover it): the answer cannot be refused later.
                charge(table.snapshot_cost([*sections, *remote]))
            session.outbound.hold()
            assert self.reader is not None
            self.reader.request(pending)
            return
        plans = self._plans(since, upto, fetched, now.mono)
        frames = self._answer(plans, sections, now)
        size = sum(map(len, frames))
        if charge is not None:
            charge(size)
        outcomes = tuple((p.outcome, len(p.entries)) for p in plans.values())
        self._count(outcomes)
        if len(self._cache) >= MAX_CACHED_ANSWERS:
            self._cache.clear()  # a storm reuses a few answers; anything else is cheap to rebuild
        self._cache[key] = _Answer(frames, size, outcomes, now.mono, table.version)
        session.outbound.release(frames, size, held=False)

    def complete(self, pending: PendingRecovery, fetched: Mapping[str, Sequence[HistoryEntry] | None], now: Instant) -> None:
        entries: dict[str, Sequence[HistoryEntry] | None] = {}
        for name, pos in pending.since_by_topic.items():
            upto = pending.upto_by_topic[name]
            if name in pending.remote:
                got = fetched.get(name)
                if got is not None:
                    got = [e for e in got if pos.seq < e.seq <= upto]
                    if [e.seq for e in got] != list(range(pos.seq + 1, upto + 1)):
                        got = None
                entries[name] = got
            else:
                entries[name] = pending.local.get(name)
        plans = self._plans(pending.since_by_topic, pending.upto_by_topic, entries, now.mono)
        self._count(tuple((p.outcome, len(p.entries)) for p in plans.values()))
        pending.session.outbound.release(self._answer(plans, pending.sections, now), held=True)

    def _plans(
        self,
        since: Mapping[str, Position],
        upto: Mapping[str, int],
        entries: Mapping[str, Sequence[HistoryEntry] | None],
        now: float,
    ) -> dict[str, TopicPlan]:
        topics, max_replay = self.topics.topics, self.max_replay()
        return {name: plan_topic(topics[name], pos, upto[name], entries.get(name), max_replay, now) for name, pos in since.items()}

    def _count(self, outcomes: Sequence[tuple[str, int]]) -> None:
        counters = self.counters
        for outcome, replayed in outcomes:
            counters.recoveries[outcome] += 1
            counters.replayed_messages += replayed

    def _answer(self, plans: Mapping[str, TopicPlan], sections: Sequence[str], now: Instant) -> list[bytes]:
        """One SNAPSHOT (sections, their positions, the verdicts), then the replays in topic
        order, each in seq order: pre-encoded sections and frames, nothing re-encoded per client."""
        table = self.topics
        wanted = set(sections)
        wanted.update(n for n, p in plans.items() if not p.recovered)
        names = [n for n in table.names if n in wanted]
        order = [n for n in table.names if n in plans]
        recovery = wire.RecoveryFields(
            recovered=[n for n in order if plans[n].recovered],
            missed_alerts={n: plans[n].alerts for n in order if plans[n].outcome == TOO_MANY},
            alerts_lost=[n for n in order if plans[n].outcome in (EPOCH_CHANGED, TOO_OLD)],
        )
        state = table.topics
        snapshot = wire.snapshot_frame(
            ((n, state[n].section()) for n in names), now.iso, positions=table.positions(names), recovery=recovery
        )
        frames = [snapshot]
        for n in order:
            frames.extend(e.frame for e in plans[n].entries)
        return frames
