"""Liveness: when each client is pinged, when it counts as dead, and when its credentials run
out (docs/protocol.md section 5).  ``heartbeat`` decides for every session at once; the shell's
heartbeat task (``uipd.server.heartbeat``) calls it every tick and drops the dead."""

from __future__ import annotations

import random
from collections.abc import Iterable

from attrs import Factory, frozen

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


def heartbeat(sessions: Iterable[Session], now: Instant, settings: HubSettings, counters: HubCounters) -> HeartbeatPlan:
    """Queue the pings that are due, close 4001 the sessions whose credentials expired, and say
    which are dead (no pong or ``ping`` action within the timeout).  A closing session is left
    alone: it is on its way out."""
    interval, timeout = settings.heartbeat_interval, settings.heartbeat_timeout
    dead: list[Session] = []
    failed: list[tuple[Session, Exception]] = []
    for session in sessions:
        # A bug in one session's state fails that session only: the others still get their
        # pings and checks in this pass (a try costs nothing in 3.11 unless it raises).
        try:
            if session.outbound.closing is not None:
                continue
            if session.expires_at is not None and now.mono >= session.expires_at:
                counters.expired_closes += 1
                session.outbound.request_close(_EXPIRED.code, _EXPIRED.reason, flush=True)
                continue
            if now.mono - session.last_alive > timeout:
                dead.append(session)
            elif now.mono >= session.next_ping_at:
                session.next_ping_at = now.mono + interval
                # The offer's outcome is not a slow consumer's: a ping that does not fit is skipped,
                # the next is due an interval later, and a client that reads nothing is dead after
                # the timeout.
                session.outbound.offer(PING, Delivery.RELIABLE)
        except Exception as exc:
            failed.append((session, exc))
    counters.heartbeat_drops += len(dead)
    return HeartbeatPlan(dead, failed)
