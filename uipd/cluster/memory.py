"""The single-node broker: a publish is applied to this node's hub at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from attrs import define

from uipd.core.clock import Instant
from uipd.core.hub import Hub, PublishResult
from uipd.core.publish import Publication


@define
class MemoryBroker:
    hub: Hub
    now: Callable[[], Instant]
    kind: str = "memory"

    @property
    def ready(self) -> bool:
        return True

    def submit(self, pub: Publication, source: str = "", on_lost: Callable[[], None] | None = None) -> PublishResult:
        return self.hub.publish(pub, self.now())  # applied or raised here: never lost later

    async def publish(self, pub: Publication) -> PublishResult:
        return self.submit(pub)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def cluster_stats(self) -> dict[str, Any] | None:
        return None
