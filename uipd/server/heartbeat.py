"""The heartbeat supervisor: one task that pings every client and drops the dead ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from uipd.core.closecodes import INTERNAL_ERROR
from uipd.core.hub import Hub, Session
from uipd.core.liveness import PING
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
    """Every ``tick`` seconds: ping the clients that are due (each on its own, jittered
    schedule) and drop clients silent for longer than the heartbeat timeout.  A pass looks only
    at the clients something is due for (the core's timing wheel, ``Hub.heartbeats``).  A due
    ping is written to an idle client's socket at once (``ConnectionWriter.write_ping``; a bug
    there fails that client only, as the core's own checks do), any other is queued for the
    flusher's next pass.  Never awaits a client: any pong its receive loop or the idle reader
    reads counts as a sign of life."""
    get = connections.get

    def write_ping(session: Session) -> bool:
        connection = get(session.id)
        return connection is not None and connection.write_ping(PING)

    task_status.started()
    while True:
        await trio.sleep(tick)
        try:
            plan = hub.heartbeat(now(), write_ping)
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
