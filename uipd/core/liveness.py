"""Liveness: when each client is pinged, when it counts as dead, and when its credentials run
out (docs/protocol.md section 5).

Each session is looked at only when something about it is due: :class:`HeartbeatSchedule` keeps
one deadline per session in a heap (the earliest of its next ping, the moment it would be dead,
its credentials' expiry).  A heartbeat pass pops the deadlines that have come, so its cost is the
number of sessions due, not the number connected: at 19,000 idle clients a one-second tick looks
at ~1,900 of them, where a walk over every session each tick cost most of an idle daemon's CPU.
The shell's heartbeat task (``uipd.server.heartbeat``) runs a pass every tick and drops the dead;
every ping of a pass is queued in it, so the flusher's next pass writes them all."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping

from attrs import Factory, define, field, frozen

from uipd.core import closecodes, wire
from uipd.core.clock import Instant
from uipd.core.counters import HubCounters
from uipd.core.outbound import Delivery
from uipd.core.sessions import Session
from uipd.core.settings import HubSettings

PING = wire.frame_ping(b"")
"""Every heartbeat ping, framed once.  Any pong is a sign of life (``Hub.pong``), so no payload
is needed to match a pong to its ping."""

_EXPIRED = closecodes.TOKEN_EXPIRED


@frozen
class HeartbeatPlan:
    dead: list[Session]
    """Sessions whose last sign of life is older than the timeout: drop them."""
    failed: list[tuple[Session, Exception]] = Factory(list)
    """Sessions whose check raised (a bug), with the error: drop them."""


def first_ping_at(now: float, interval: float, rng: random.Random) -> float:
    """A new client's first ping is spread over one interval, so that a mass reconnect does not
    ping in lockstep."""
    return now + rng.uniform(0.0, interval)


@define
class HeartbeatSchedule:
    """The heartbeat's deadlines: one heap entry ``(deadline, seq, session)`` per scheduled session.

    A pong does not touch the heap (it only moves ``last_alive``, as it did): a deadline that
    comes early for a session heard from since is looked at once and pushed to the session's
    real next deadline, which is never earlier than its next ping.  An entry whose deadline is no
    longer the session's ``check_at`` (it left: ``remove``) is dropped when it comes up."""

    _heap: list[tuple[float, int, Session]] = field(factory=list)
    _seq: int = 0
    """Ties between equal deadlines are broken by push order (sessions do not compare)."""
    checked: int = 0
    """Sessions looked at by every pass so far (each popped deadline counts once): what a pass
    costs, for the tests and ``/metrics``."""

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, session: Session, timeout: float) -> None:
        """Schedule a new session (its ``next_ping_at``, ``last_alive`` and ``expires_at`` set)."""
        self._push(session, _next_check(session, timeout))

    def remove(self, session: Session) -> None:
        """The session left: its entry is dropped when its deadline comes (O(1) now)."""
        session.check_at = None

    def _push(self, session: Session, deadline: float) -> None:
        session.check_at = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, session))

    def run(self, now: Instant, settings: HubSettings, sessions: Mapping[str, Session], counters: HubCounters) -> HeartbeatPlan:
        """Queue the pings that are due, close 4001 the sessions whose credentials expired, and say
        which are dead (no pong or ``ping`` action within the timeout).  A closing session is left
        alone: it is on its way out.  Dead and failed sessions are reported again at every pass
        until the shell has dropped them."""
        heap, mono = self._heap, now.mono
        interval, timeout = settings.heartbeat_interval, settings.heartbeat_timeout
        dead: list[Session] = []
        failed: list[tuple[Session, Exception]] = []
        while heap and heap[0][0] <= mono:
            deadline, _, session = heapq.heappop(heap)
            if session.check_at != deadline or sessions.get(session.id) is not session:
                continue  # it left, or this entry was superseded
            self.checked += 1
            # A bug in one session's state fails that session only: the others still get their
            # pings and checks in this pass (a try costs nothing in 3.11 unless it raises).
            try:
                if session.outbound.closing is not None:
                    session.check_at = None
                    continue
                if session.expires_at is not None and mono >= session.expires_at:
                    counters.expired_closes += 1
                    session.outbound.request_close(_EXPIRED.code, _EXPIRED.reason, flush=True)
                    session.check_at = None
                    continue
                if mono - session.last_alive > timeout:
                    dead.append(session)
                    continue
                if mono >= session.next_ping_at:
                    session.next_ping_at = mono + interval
                    # The offer's outcome is not a slow consumer's: a ping that does not fit is
                    # skipped, the next is due an interval later, and a client that reads nothing
                    # is dead after the timeout.
                    session.outbound.offer(PING, Delivery.RELIABLE)
                self._push(session, _next_check(session, timeout))
            except Exception as exc:
                failed.append((session, exc))
        # Pushed after the loop (the pass would pop them again otherwise): due at the next pass.
        for session in dead:
            self._push(session, mono)
        for session, _ in failed:
            self._push(session, mono)
        counters.heartbeat_drops += len(dead)
        return HeartbeatPlan(dead, failed)


def _next_check(session: Session, timeout: float) -> float:
    """The first moment something about ``session`` may be due: its next ping, the first instant
    it counts as dead (strictly more than ``timeout`` after its last sign of life), its expiry."""
    deadline = min(session.next_ping_at, math.nextafter(session.last_alive + timeout, math.inf))
    expires_at = session.expires_at
    return deadline if expires_at is None or expires_at >= deadline else expires_at
