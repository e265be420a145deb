"""The heartbeat supervisor: one task that pings every client and drops the dead ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from uipd.core.closecodes import INTERNAL_ERROR
from uipd.core.hub import Hub, Session
from uipd.server.clock import now
from uipd.server.connection import ClientConnection

log = logging.getLogger(__name__)


async def supervise_heartbeats(
    hub: Hub,
    connections: Mapping[str, ClientConnection],
    *,
    tick: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``tick`` seconds: queue the pings that are due (each client on its own, jittered
    schedule) and drop clients silent for longer than the heartbeat timeout.  A pass looks only
    at the clients something is due for (the core's deadline heap, ``Hub.heartbeats``), and its
    pings all go out in the flusher's next pass.  Never awaits a client: a ping is a frame in the
    client's queue, and any pong the client's receive loop reads counts as a sign of life."""
    task_status.started()
    while True:
        await trio.sleep(tick)
        try:
            plan = hub.heartbeat(now())
        except Exception:  # the core fails one session at a time (plan.failed); this is a bug of the pass itself
            log.exception("heartbeat pass failed; trying again in %.1f s", tick)
            continue
        for session, exc in plan.failed:
            _drop(hub, connections, session, exc)
        for session in plan.dead:
            log.info("client %s: no pong for %.0f s, dropping it", session.id, hub.settings.heartbeat_timeout)
            _drop(hub, connections, session)


def _drop(hub: Hub, connections: Mapping[str, ClientConnection], session: Session, failure: Exception | None = None) -> None:
    """End a session's connection (``failure``: what its heartbeat raised, logged once naming the
    client); never raises, so the rest of the pass is still handled."""
    try:
        connection = connections.get(session.id)
        if connection is None:
            # No connection owns it (a bug leaked it): nothing else would ever remove it.  Closing
            # it first means later passes skip it, even if removing it fails too.
            log.error("client %s: session without a connection; removing it", session.id, exc_info=failure)
            session.outbound.request_close(INTERNAL_ERROR.code, INTERNAL_ERROR.reason, flush=False)
            hub.disconnect(session)
        elif failure is not None:
            connection.fault("heartbeat", failure)
        else:
            connection.abort()
    except Exception:
        log.exception("client %s: dropping it failed", session.id)
