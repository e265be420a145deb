"""Liveness: when each client is pinged, when it counts as dead, and when its credentials run
out (docs/protocol.md section 5).

Each session is looked at only when something about it is due: :class:`HeartbeatSchedule` keeps
one deadline per session in a timing wheel (the earliest of its next ping, the moment it would be dead,
its credentials' expiry).  A heartbeat pass pops the deadlines that have come, so its cost is the
number of sessions due, not the number connected: at 19,000 idle clients a one-second tick looks
at ~1,900 of them, where a walk over every session each tick cost most of an idle daemon's CPU.
The shell's heartbeat task (``uipd.server.heartbeat``) runs a pass every tick and drops the dead;
it writes each due ping straight to an idle client's socket (``WritePing``), and any other ping is
queued, so the flusher's next pass writes it with the frames before it."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping

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


WritePing = Callable[[Session], bool]
"""The shell's way to write a due ping at once (``Hub.heartbeat``): True when it was written, False
when the session's queue is to take it (frames are queued or being written, or no direct write)."""

SLOTS_PER_SECOND = 16
"""The schedule's resolution: deadlines are kept in one list per 1/16 s."""

_WIDE_GAP = 4096
"""A pass this many slots after the last one looks only at the slots that hold something."""


@define
class HeartbeatSchedule:
    """The heartbeat's deadlines, in a timing wheel: one list of ``(deadline, session)`` entries
    per 1/16 s slot, one entry per scheduled session.  Scheduling appends to a slot and a pass
    takes the slots whose time has come, so both are O(1) per session (a heap's push and pop
    were a sixth of an idle daemon's CPU at 19,000 clients).  Deadlines stay exact: the entries
    of the slot the pass is in that are not due yet are kept for the next pass.

    A pong does not touch the schedule (it only moves ``last_alive``): a deadline that comes
    early for a session heard from since is looked at once and moved to the session's real
    next deadline, which is never earlier than its next ping.  An entry whose deadline is no
    longer the session's ``check_at`` (it left: ``remove``) is dropped when it comes up."""

    _slots: dict[int, list[tuple[float, Session]]] = field(factory=dict)
    _next_slot: int | None = None
    """The first slot the next pass looks at (the one the last pass was in: its rest may be due)."""
    _entries: int = 0
    checked: int = 0
    """Sessions looked at by every pass so far (each deadline that came counts once): what a pass
    costs, for the tests and ``/metrics``."""

    def __len__(self) -> int:
        return self._entries

    def entries(self) -> list[tuple[float, Session]]:
        """Every entry, superseded ones included (for tests)."""
        return [entry for slot in self._slots.values() for entry in slot]

    def add(self, session: Session, timeout: float) -> None:
        """Schedule a new session (its ``next_ping_at``, ``last_alive`` and ``expires_at`` set)."""
        self._push(session, _next_check(session, timeout))

    def remove(self, session: Session) -> None:
        """The session left: its entry is dropped when its deadline comes (O(1) now)."""
        session.check_at = None

    def _push(self, session: Session, deadline: float) -> None:
        session.check_at = deadline
        self._entries += 1
        key = math.floor(deadline * SLOTS_PER_SECOND)
        if self._next_slot is not None and key < self._next_slot:
            key = self._next_slot  # already past (a clock read before the last pass): due at the next
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = [(deadline, session)]
        else:
            slot.append((deadline, session))

    def _due(self, mono: float) -> list[tuple[float, Session]]:
        """Take every entry whose deadline is at or before ``mono``, in deadline-slot order."""
        slots, last = self._slots, math.floor(mono * SLOTS_PER_SECOND)
        first = self._next_slot
        if first is None or last - first > _WIDE_GAP or first > last:
            keys: Iterable[int] = sorted(key for key in slots if key <= last)
        else:
            keys = range(first, last + 1)
        self._next_slot = last
        due: list[tuple[float, Session]] = []
        for key in keys:
            slot = slots.pop(key, None)
            if slot is None:
                continue
            if key == last:  # the slot the pass is in: part of it may be still to come
                later = [entry for entry in slot if entry[0] > mono]
                if later:
                    slots[key] = later
                    slot = [entry for entry in slot if entry[0] <= mono]
            due += slot
        self._entries -= len(due)
        return due

    def run(
        self,
        now: Instant,
        settings: HubSettings,
        sessions: Mapping[str, Session],
        counters: HubCounters,
        write_ping: WritePing | None = None,
    ) -> HeartbeatPlan:
        """Ping the sessions that are due (``write_ping`` first, else their queue), close 4001
        the sessions whose credentials expired, and say which are dead (no pong or ``ping``
        action within the timeout).  A closing session is left alone: it is on its way out.
        Dead and failed sessions are reported again at every pass until the shell has dropped
        them."""
        mono = now.mono
        interval, timeout = settings.heartbeat_interval, settings.heartbeat_timeout
        dead: list[Session] = []
        failed: list[tuple[Session, Exception]] = []
        for deadline, session in self._due(mono):
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
                    if write_ping is None or not write_ping(session):
                        session.outbound.offer(PING, Delivery.RELIABLE)
                self._push(session, _next_check(session, timeout))
            except Exception as exc:
                failed.append((session, exc))
        # Due again at the next pass (this pass has taken its entries already).
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
