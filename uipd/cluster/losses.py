"""Lost-ALERT accounting of the Redis broker: which ALERTs this node's clients did not get, or
that may not have been published, counted by topic and reason (the metric
``uipd_alerts_lost_total``) and logged with their topic and seq."""

from __future__ import annotations

import logging
from collections import Counter

from attrs import define, field

log = logging.getLogger("uipd.cluster.redis")  # one logger for the broker's lines, as operators filter them

LOST_REASONS = {
    "join": "published while this node (re)loaded the cluster's state, which no ALERT is part of: this node's clients did not get it",
    "cut_off": "published while this node was cut off from Redis: this node's clients did not get it",
    "publish_failed": "not published: Redis refused it",
    "publish_unknown": "sent to Redis, which did not answer: it may or may not have been published",
    "not_sent": "not sent to Redis within publish_timeout: not published",
    "lease_lost": "not published: its source's lease had passed from this node (to another, or expired) before it reached Redis",
}
"""The ``reason`` label of ``uipd_alerts_lost_total``, and what each means (logged with the ALERT)."""

LOGGED_LOST = 20
"""ALERTs lost while cut off logged one line each per reconnect; the rest are counted and summed up
in one line per topic (a long outage must not flood the log)."""


@define
class AlertLosses:
    """The ALERTs lost, or possibly lost, since the node started."""

    lost_alerts: Counter[tuple[str, str]] = field(factory=Counter)
    """(topic or "", reason) -> ALERTs lost or possibly lost (see :data:`LOST_REASONS`)."""
    missed: Counter[str] = field(factory=Counter)
    """Topic -> messages published while this node was cut off from Redis that may have been ALERTs:
    older than what Redis' ALERT record still covers (see :meth:`count_missed`)."""

    def count(self, topic: str | None, seq: int | None, reason: str, origin: str = "") -> None:
        """One ALERT lost, or possibly lost: counted, and logged with its topic and seq."""
        self.lost_alerts[(topic or "", reason)] += 1
        log.warning("ALERT of topic %s (seq %s)%s: %s", topic or "(none)", seq if seq is not None else "unassigned", origin, LOST_REASONS[reason])

    def count_missed(self, before: dict[str, int], loaded: dict[str, int], records: dict[str, tuple[int, list[int]]]) -> None:
        """Messages published while this node was cut off from Redis never reached it: the resync
        SNAPSHOT carries their UPDATEs' effect, but an ALERT among them is lost.  Redis' ALERT
        record (``records``: topic -> its floor and the ALERT seqs after ``before``, read with the
        state) tells which of them were ALERTs: each is counted and logged with its topic and seq
        (the first LOGGED_LOST one line each, then a sum per topic).  Those older than the record's
        floor (trimmed, or published before Redis had a record) are of unknown kind: counted in
        ``missed`` and logged as a range, as they may have been ALERTs."""
        logged = 0
        for topic, seq in loaded.items():
            first = before.get(topic, 0) + 1
            if seq < first:
                continue
            floor, alerts = records[topic]
            log.warning(
                "cluster broker: topic %s: %d message(s) (seq %d-%d) were published while this node was cut off from Redis; "
                "its clients get their state in the resync; %d of them ALERTs (lost)", topic, seq - first + 1, first, seq, len(alerts),
            )
            shown = alerts[: LOGGED_LOST - logged]
            for alert in shown:
                self.count(topic, alert, "cut_off")
            logged += len(shown)
            rest = alerts[len(shown) :]
            if rest:
                self.lost_alerts[(topic, "cut_off")] += len(rest)
                log.warning(
                    "%d more ALERT(s) of topic %s (seqs %d-%d, not logged one by one): %s", len(rest), topic, rest[0], rest[-1], LOST_REASONS["cut_off"]
                )
            unknown = min(floor, seq + 1) - first
            if unknown > 0:
                self.missed[topic] += unknown
                log.warning(
                    "cluster broker: topic %s: %d message(s) (seq %d-%d) missed while cut off are older than Redis' ALERT record "
                    "(it holds every ALERT from seq %d on; [broker] alert_record): any ALERTs among them are lost uncounted",
                    topic, unknown, first, first + unknown - 1, floor,
                )
