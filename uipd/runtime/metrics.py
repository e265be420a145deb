"""Prometheus metrics, served at ``GET /metrics`` of the API listener.

Nothing is done per delivery: a custom collector reads the hub's counters and state, the
sources' statuses and the daemon's refusal counts at scrape time.  The only metric updated as
things happen is the publish-time histogram (once per publish, in ``HubPublisher.submit``).
Every daemon has its own :class:`CollectorRegistry`, so several daemons in one process (tests)
never clash.  Label values are bounded: topics are the configured ones, sources the configured
ones, close codes a fixed set (others are ``other``), refusal reasons a fixed set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from uipd.core.closecodes import KNOWN_CODES
from uipd.core.hub import Hub
from uipd.core.recovery import OUTCOMES
from uipd.sources.supervisor import SourceStatus

QUEUE_BYTES_BUCKETS = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
PUBLISH_SECONDS_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class CompressionCounts(Protocol):
    """What is read of the flusher's compressor (uipd.server.deflate.Compressor)."""

    clients: int
    input_bytes: int
    output_bytes: int
    plain_bytes: int
    cpu_seconds: float
    built: int
    off_loop: int

    @property
    def ratio(self) -> float: ...


class FlusherCounts(Protocol):
    """What is read of the flusher (uipd.server.flusher)."""

    rounds: int
    writes: int
    frames_written: int
    writer_starts: int
    compression: CompressionCounts


class IdleCounts(Protocol):
    """What is read of the idle reader (uipd.server.idle)."""

    reads: int
    consumed: int
    woken: int

    def __len__(self) -> int: ...


class Observed(Protocol):
    """What the collector reads of a running daemon (uipd.runtime.daemon) at each scrape."""

    hub: Hub
    flusher: FlusherCounts
    idle_reader: IdleCounts
    broker: object
    """Its ``lost_alerts`` and ``missed`` counters, when it has them (the Redis broker)."""
    reloads: Mapping[str, int]

    @property
    def refusals(self) -> Mapping[str, int]:
        """Handshakes refused, by reason."""

    @property
    def sources(self) -> Sequence[SourceStatus]: ...

    @property
    def shutting_down(self) -> bool: ...


class DaemonCollector(Collector):
    """Reads one daemon's counters and state when Prometheus scrapes."""

    def __init__(self, daemon: Observed) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        hub = d.hub
        c = hub.counters
        topics = hub.topics.names

        yield GaugeMetricFamily("uipd_clients", "Connected WebSocket clients.", value=len(hub.sessions))
        yield CounterMetricFamily("uipd_connections_opened", "WebSocket connections accepted (handshake completed).", value=c.connections)

        closed = CounterMetricFamily("uipd_connections_closed", "WebSocket connections closed, by close code (1006: dropped without a close frame).", labels=["code"])
        by_code: dict[str, int] = {}
        for code, n in c.closes.items():
            key = str(code) if code in KNOWN_CODES else "other"
            by_code[key] = by_code.get(key, 0) + n
        for code, n in sorted(by_code.items()):
            closed.add_metric([code], n)
        yield closed

        refused = CounterMetricFamily("uipd_handshakes_refused", "WebSocket handshakes refused, by reason (not_found: 404 path, shutting_down: 503, timeout, ...).", labels=["reason"])
        reasons: dict[str, int] = dict(d.refusals)
        reasons["timeout"] = reasons.get("timeout", 0) + c.handshake_timeouts
        for reason, n in sorted(reasons.items()):
            refused.add_metric([reason], n)
        yield refused

        published = CounterMetricFamily("uipd_messages_published", "Messages published, by topic and type (a broadcast is counted under uipd_broadcasts_total).", labels=["topic", "type"])
        broadcasts = CounterMetricFamily("uipd_broadcasts", "Messages broadcast to every client, by type.", labels=["type"])
        per_topic: dict[tuple[str, str], int] = {(t, kind): 0 for t in topics for kind in ("UPDATE", "ALERT")}
        per_type: dict[str, int] = {"UPDATE": 0, "ALERT": 0}
        for (topic, kind, broadcast), n in list(c.published_by.items()):
            if broadcast:
                per_type[kind] = per_type.get(kind, 0) + n
            elif (topic, kind) in per_topic:
                per_topic[(topic, kind)] += n
        for (topic, kind), n in per_topic.items():
            published.add_metric([topic, kind], n)
        for kind, n in per_type.items():
            broadcasts.add_metric([kind], n)
        yield published
        yield broadcasts

        yield CounterMetricFamily("uipd_deliveries", "Messages queued for (or written to) a client: one per recipient of a publish.", value=c.deliveries)
        yield CounterMetricFamily("uipd_sent_bytes", "Bytes of UPDATE/ALERT frames delivered to clients (frame size times recipients; snapshots and control frames not included).", value=c.delivered_bytes)

        resyncs = CounterMetricFamily("uipd_slow_consumer_resyncs", "Slow consumers resynced (their UPDATEs dropped, one SNAPSHOT sent), by the topic whose publish overflowed them (\"\": a reply or a broadcast).", labels=["topic"])
        disconnects = CounterMetricFamily("uipd_slow_consumer_disconnects", "Slow consumers disconnected (close 4008), by the topic whose publish overflowed them (\"\": a reply or a broadcast).", labels=["topic"])
        for metric, kind, total in ((resyncs, "resync", c.resyncs), (disconnects, "disconnect", c.slow_disconnects)):
            counted = 0
            for topic in topics:
                n = c.slow_by_topic.get((topic, kind), 0)
                counted += n
                metric.add_metric([topic], n)
            metric.add_metric([""], max(0, total - counted))
            yield metric

        f = d.flusher
        yield CounterMetricFamily("uipd_write_passes", "Passes of the flusher, which writes every client's new frames once per scheduler round.", value=f.rounds)
        yield CounterMetricFamily("uipd_direct_writes", "Writes of a client's new frames straight to its socket (one writev each).", value=f.writes)
        yield CounterMetricFamily("uipd_direct_write_frames", "Frames in those writes (frames per write: how many messages share a system call).", value=f.frames_written)
        yield CounterMetricFamily("uipd_writer_tasks_started", "Writer tasks started for clients whose socket was full or that had a close or resync due.", value=f.writer_starts)
        idle = d.idle_reader
        yield GaugeMetricFamily("uipd_idle_parked_connections", "Connections whose receive loop is parked with the idle reader (their socket was drained).", value=len(idle))
        yield CounterMetricFamily("uipd_idle_reads", "Reads of parked connections' sockets by the idle reader.", value=idle.reads)
        yield CounterMetricFamily("uipd_idle_reads_consumed", "Of those, reads taken without waking the connection (a lone pong: a sign of life).", value=idle.consumed)
        z = f.compression
        yield GaugeMetricFamily("uipd_compressed_clients", "Connected clients that negotiated permessage-deflate.", value=z.clients)
        sent = CounterMetricFamily("uipd_frame_bytes_sent", "Bytes of frames written to clients: deflate = to clients that negotiated compression (as sent), plain = to the others.", labels=["encoding"])
        sent.add_metric(["deflate"], z.output_bytes)
        sent.add_metric(["plain"], z.plain_bytes)
        yield sent
        yield CounterMetricFamily("uipd_compression_input_bytes", "Uncompressed size of the frames written to clients that negotiated compression.", value=z.input_bytes)
        yield GaugeMetricFamily("uipd_compression_ratio", "Bytes sent to compressing clients per byte of their uncompressed frames (1: nothing sent yet).", value=z.ratio)
        yield CounterMetricFamily("uipd_compression_cpu_seconds", "CPU seconds spent compressing messages (each message once, whoever receives it).", value=z.cpu_seconds)
        yield CounterMetricFamily("uipd_compressed_messages", "Messages compressed (built once, shared by every compressing client).", value=z.built)
        yield CounterMetricFamily("uipd_compressed_off_loop", "Of those, large ones compressed in a worker thread.", value=z.off_loop)
        yield CounterMetricFamily("uipd_heartbeat_drops", "Clients dropped for missing pongs past the heartbeat timeout.", value=c.heartbeat_drops)
        yield CounterMetricFamily("uipd_client_errors", "ERROR replies sent to clients (bad requests, unknown topics, rate limiting).", value=c.client_errors)
        yield CounterMetricFamily("uipd_rate_limit_closes", "Clients closed 1008 for exceeding the message rate limit.", value=c.rate_limit_closes)
        yield CounterMetricFamily("uipd_token_expiry_closes", "Clients closed 4001 when their credentials (a JWT's exp) expired.", value=c.expired_closes)
        yield CounterMetricFamily("uipd_forbidden_requests", "Subscribes and snapshot requests answered ERROR forbidden (topics outside a JWT topics claim).", value=c.forbidden)
        yield CounterMetricFamily("uipd_subscription_limit_refusals", "Subscribes answered ERROR too_many_subscriptions (past max_subscriptions).", value=c.subscription_limit)
        yield CounterMetricFamily("uipd_dropped_updates", "UPDATEs dropped for slow consumers, superseded by the resync SNAPSHOT they were sent instead.", value=hub.dropped_updates())

        queue = HistogramMetricFamily("uipd_client_queue_bytes", "Bytes waiting for each connected client at scrape time (the distribution now, not a running total).")
        counts = [0] * len(QUEUE_BYTES_BUCKETS)
        total_bytes = 0
        for session in list(hub.sessions.values()):
            pending = session.outbound.pending_bytes
            total_bytes += pending
            for i, bound in enumerate(QUEUE_BYTES_BUCKETS):
                if pending <= bound:
                    counts[i] += 1
                    break
        buckets, running = [], 0
        for bound, n in zip(QUEUE_BYTES_BUCKETS, counts):
            running += n
            buckets.append((str(float(bound)), running))
        buckets.append(("+Inf", len(hub.sessions)))
        queue.add_metric([], buckets, sum_value=total_bytes)
        yield queue

        subscribers = GaugeMetricFamily("uipd_topic_subscribers", "Clients receiving each topic.", labels=["topic"])
        entities = GaugeMetricFamily("uipd_topic_entities", "Entities in each topic's current state.", labels=["topic"])
        seq = CounterMetricFamily("uipd_topic_seq", "The last seq of each topic (messages published on it).", labels=["topic"])
        for name, state in list(hub.topics.topics.items()):
            subscribers.add_metric([name], hub.subscriber_count(name))
            entities.add_metric([name], len(state.entities))
            seq.add_metric([name], state.seq)
        yield subscribers
        yield entities
        yield seq

        history = GaugeMetricFamily("uipd_history_messages", "Messages kept in each topic's history for recovery ([history] size, ttl).", labels=["topic"])
        history_bytes = GaugeMetricFamily("uipd_history_bytes", "Bytes of the frames kept in each topic's history.", labels=["topic"])
        for name, state in list(hub.topics.topics.items()):
            history.add_metric([name], state.history.messages)
            history_bytes.add_metric([name], state.history.bytes)
        yield history
        yield history_bytes
        recoveries = CounterMetricFamily("uipd_recoveries", "Topics clients asked to recover (since=), by outcome: replayed (zero or more messages), epoch_changed, too_old (history does not reach back; alertsLost) or too_many (past max_replay or the bytes rule: a section and missedAlerts).", labels=["outcome"])
        for outcome in OUTCOMES:
            recoveries.add_metric([outcome], c.recoveries.get(outcome, 0))
        yield recoveries
        yield CounterMetricFamily("uipd_replayed_messages", "Messages replayed from history to recovering clients.", value=c.replayed_messages)

        up = GaugeMetricFamily("uipd_source_running", "1 while the source's task runs, 0 while it waits to restart.", labels=["source"])
        ready = GaugeMetricFamily("uipd_source_ready", "1 once the source has loaded its initial state.", labels=["source"])
        restarts = CounterMetricFamily("uipd_source_restarts", "Restarts of each source after a failure.", labels=["source"])
        errors = CounterMetricFamily("uipd_source_errors", "Failures of each source.", labels=["source"])
        # reasons are PublishError codes (bad_request, forbidden_topic, unknown_topic, ...): a fixed set
        refused_publishes = CounterMetricFamily("uipd_publishes_refused", "Publishes of each source that uipd refused (nothing of them published), by error code; the API's are answered 400 instead.", labels=["source", "reason"])
        for s in list(d.sources):
            up.add_metric([s.name], int(s.running))
            ready.add_metric([s.name], int(s.ready))
            restarts.add_metric([s.name], s.restarts)
            errors.add_metric([s.name], s.errors)
            for reason, n in sorted(s.publisher.refused.items()):
                refused_publishes.add_metric([s.name, reason], n)
        yield up
        yield ready
        yield restarts
        yield errors
        yield refused_publishes

        reloads = CounterMetricFamily("uipd_config_reloads", "Config reloads (SIGHUP), by result.", labels=["result"])
        for result in ("ok", "failed"):
            reloads.add_metric([result], d.reloads.get(result, 0))
        yield reloads

        # Only the Redis broker loses ALERTs this way (the memory broker has no such counter).
        lost = CounterMetricFamily("uipd_alerts_lost", "ALERTs this node's clients did not get or that may not have been published, by topic (\"\": none) and reason (join, cut_off, publish_failed, publish_unknown, not_sent, lease_lost); each is also logged with its topic and seq.", labels=["topic", "reason"])
        for (topic, reason), n in sorted(getattr(d.broker, "lost_alerts", {}).items()):
            lost.add_metric([topic, reason], n)
        yield lost
        missed = CounterMetricFamily("uipd_cluster_messages_missed", "Redis broker: messages published while this node was cut off from Redis that may have been ALERTs (older than the ALERT record in Redis, [broker] alert_record), by topic; their state comes with the resync, ALERTs among them are lost uncounted.", labels=["topic"])
        for topic, n in sorted(getattr(d.broker, "missed", {}).items()):
            missed.add_metric([topic], n)
        yield missed
        history = getattr(d.broker, "history", None)  # the Redis broker's history reader
        if history is not None:
            yield CounterMetricFamily("uipd_cluster_history_reads", "Redis broker: history reads for recovering clients (one script call per batch).", value=history.reads)
            yield CounterMetricFamily("uipd_cluster_history_unread", "Redis broker: recovering clients answered without the history they needed (not connected, queue full, Redis failing or slow): a section and alertsLost.", value=history.unread)
            yield CounterMetricFamily("uipd_cluster_caught_up_messages", "Redis broker: messages missed while cut off from Redis and fanned out from the history streams once back (no resync).", value=d.broker.caught_up)
        yield GaugeMetricFamily("uipd_draining", "1 once the daemon is draining (SIGTERM).", value=int(d.shutting_down))


class Metrics:
    """One daemon's registry: the scrape-time collector and the publish-time histogram."""

    def __init__(self, daemon: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        self.publish_seconds = Histogram(
            "uipd_publish_seconds",
            "Time of one publish in the hub: state update, encoding, and queueing the frame for every recipient (the writes follow in the next write pass).",
            buckets=PUBLISH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.observe_publish = self.publish_seconds.observe

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type (text format 0.0.4, which every Prometheus reads)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
