"""The cluster view in /api/stats: each node announces itself in Redis every few seconds (its
clients, port: ``node_stats``) and reads the others' announcements; one silent for longer than
:data:`FRESH` is gone and removed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio
from attrs import define, field

ANNOUNCE_INTERVAL = 2.0
"""Seconds between two announcements of this node."""
FRESH = 10.0
"""An announcement older than this many seconds is a node that is gone."""


@define
class NodeList:
    """The nodes of the cluster as this one last read them from the hash ``key``."""

    key: str
    node_id: str
    node_stats: Callable[[], dict[str, Any]]
    _nodes: dict[str, Any] = field(factory=dict, init=False)

    async def run(self, client: Any, call: Callable[[Awaitable[Any], str], Awaitable[Any]]) -> None:
        """Announce and read, for one session with Redis; ``call`` bounds each call.  The
        announcements carry wall-clock times (``time.time``, not a monotonic clock): they are
        compared across hosts."""
        while True:
            info = {"ts": time.time(), **self.node_stats()}
            await call(client.hset(self.key, {self.node_id: orjson.dumps(info)}), "the node announce")
            raw = await call(client.hgetall(self.key), "the node list")
            now = time.time()
            nodes = {}
            for node, blob in raw.items():
                entry = orjson.loads(blob)
                if now - entry.get("ts", 0) < FRESH:
                    nodes[node.decode() if isinstance(node, bytes) else node] = entry
                else:
                    await call(client.hdel(self.key, [node]), "the node list cleanup")
            self._nodes = nodes
            await trio.sleep(ANNOUNCE_INTERVAL)

    def view(self) -> dict[str, Any]:
        """Each node's last announcement (without its time), by node id."""
        return {n: {k: v for k, v in e.items() if k != "ts"} for n, e in self._nodes.items()}
