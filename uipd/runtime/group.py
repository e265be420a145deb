"""A worker's answers for its whole group (``[server] workers``): ``/api/stats``, ``/metrics``
and so ``uipd stats`` count every worker's clients, whichever worker the kernel handed the
request to.

Each worker already announces itself to the cluster in Redis every
:data:`~uipd.cluster.nodes.ANNOUNCE_INTERVAL` seconds (uipd.cluster.nodes); a worker adds what
the totals need: its clients per topic, its sources and its rendered metrics.  The answering
worker adds its own live figures to the others' last announcements.  So the totals cost nothing
per request and no channel between workers, at the price of being up to two seconds old for
the other workers (the announcement period): the same staleness as the cluster view.  An
announcement from a process that is gone (a killed worker, before its replacement announces
under the same node id) is left out: the workers share a host, so its pid says so.

Why not ask the other workers at request time: it needs a private listener per worker and a
request fan-out with its own timeouts and failures, for figures that a scrape every 15 s does not
need fresher.  Why not the supervisor: it would need the hub's state or a channel from every
worker anyway, and the API's publish must reach a broker node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from attrs import frozen
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from uipd.runtime.daemon import Daemon

MAX_METRICS = frozenset({
    "uipd_topic_seq", "uipd_topic_entities", "uipd_history_messages", "uipd_history_bytes", "uipd_draining",
    "uipd_source_running", "uipd_source_ready",
})
"""Metrics that are the same fact on every worker (the cluster's seq, state, history; a leased
source runs on one): the group's value is the largest, not the sum.  Every other one (clients,
deliveries, closes, histograms' buckets) adds up."""


_SUMMED = ("subscribers", "sources", "metrics")
"""What a worker's announcement carries for the totals only: left out of the cluster view."""


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: not ours, but alive
        return True
    return True


def merge_metrics(texts: Iterable[str]) -> bytes:
    """The Prometheus text expositions of several workers as one: each sample summed over the
    workers (the largest for :data:`MAX_METRICS` and ``*_created``), in the first one's order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            keep_max = family.name in MAX_METRICS or family.name.endswith("_created")
            merged = values[family.name]
            for s in family.samples:
                key = (s.name, tuple(s.labels.items()))
                if key not in merged:
                    merged[key] = s.value
                else:
                    merged[key] = max(merged[key], s.value) if keep_max else merged[key] + s.value
    for name, family in families.items():
        family.samples = [Sample(n, dict(labels), v) for (n, labels), v in values[name].items()]

    class _Merged:
        def collect(self) -> Iterable[Metric]:
            return families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())  # type: ignore[arg-type]
    return generate_latest(registry)


@frozen
class WorkerGroup:
    """This worker's place in its group: the group's id and its own index."""

    group: str
    index: int

    def announce(self, daemon: Daemon) -> dict[str, Any]:
        """What this worker adds to its node announcement (uipd.cluster.nodes)."""
        hub = daemon.hub
        return {
            "group": self.group, "worker": self.index, "pid": os.getpid(), "sessions": len(hub.sessions),
            "subscribers": {name: hub.subscriber_count(name) for name in hub.topics.names},
            "sources": daemon.runner.stats(), "metrics": daemon.metrics.render()[0].decode(),
        }

    def peers(self, daemon: Daemon) -> dict[str, dict[str, Any]]:
        """The other workers' last announcements, by node id (those of live processes)."""
        nodes = getattr(daemon.broker, "nodes", None)
        view = nodes.view() if nodes is not None else {}
        own = os.getpid()
        return {n: e for n, e in view.items() if e.get("group") == self.group and e.get("pid") != own and _alive(e.get("pid"))}

    def stats(self, daemon: Daemon, own: dict[str, Any]) -> dict[str, Any]:
        """``/api/stats`` for the group: ``own`` (this worker's) with the others' clients and
        subscribers added, a source's status from the worker that runs it, and ``workers``:
        each one's clients."""
        peers = self.peers(daemon)
        out = dict(own)
        out["clients"] = own["clients"] + sum(p.get("sessions", 0) for p in peers.values())
        out["topics"] = {
            name: {**t, "subscribers": t["subscribers"] + sum(p.get("subscribers", {}).get(name, 0) for p in peers.values())}
            for name, t in own["topics"].items()
        }
        sources = dict(own.get("sources", {}))
        for p in peers.values():
            for name, status in p.get("sources", {}).items():
                if name in sources and status.get("running") and not sources[name].get("running"):
                    sources[name] = status
        out["sources"] = sources
        node = getattr(daemon.broker, "node_id", f"w{self.index}")
        workers = {node: {"worker": self.index, "pid": os.getpid(), "clients": own["clients"]}}
        workers |= {n: {"worker": p.get("worker"), "pid": p.get("pid"), "clients": p.get("sessions", 0)} for n, p in peers.items()}
        cluster = out.get("cluster")
        if isinstance(cluster, dict) and isinstance(cluster.get("nodes"), dict):  # the announcements without what is summed above
            out["cluster"] = {**cluster, "nodes": {n: {k: v for k, v in e.items() if k not in _SUMMED} for n, e in cluster["nodes"].items()}}
        out["workers"] = dict(sorted(workers.items(), key=lambda kv: kv[1]["worker"] if isinstance(kv[1]["worker"], int) else 0))
        return out

    def metrics(self, daemon: Daemon) -> tuple[bytes, str]:
        """``/metrics`` for the group (the ApiApp's ``metrics`` callable)."""
        body, content_type = daemon.metrics.render()
        texts = [body.decode(), *(p["metrics"] for p in self.peers(daemon).values() if isinstance(p.get("metrics"), str))]
        return merge_metrics(texts), content_type
