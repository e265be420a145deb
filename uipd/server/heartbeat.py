"""The heartbeat supervisor: one task that pings every client and drops the dead ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from uipd.core.hub import Hub
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
    schedule) and drop clients silent for longer than the heartbeat timeout.  Never awaits a
    client: a ping is a frame in the client's queue, and any pong the client's receive loop
    reads counts as a sign of life."""
    task_status.started()
    while True:
        await trio.sleep(tick)
        plan = hub.heartbeat(now())
        for session in plan.dead:
            connection = connections.get(session.id)
            if connection is not None:
                log.info("client %s: no pong for %.0f s, dropping it", session.id, hub.settings.heartbeat_timeout)
                connection.abort()
