"""The client rules of recovery (docs/protocol.md section 8), pure data with no I/O: the same rules
as the browser client's clients/js/src/positions.js.

Per topic the client keeps the last position it applied (epoch + seq). A topic message is applied
only when its seq is the next one; an older one is a duplicate (a replay overlapping what was
applied); a newer one means messages were lost on the way, so the client asks again with ``since``
(once per topic until an answer arrives). An ALERT is an event, not state: one that arrives past a
gap is still shown at once, and remembered so that the replay or ``missedAlerts`` of that gap does
not show it a second time.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from attrs import define, frozen

ALERT_MEMORY = 1024
"""How many shown ALERTs are remembered (per client, every topic together)."""
MAX_URL = 8000
"""Browsers and proxies refuse longer URLs; the daemon's whole request head is at most 16 KiB."""

Since = dict[str, dict[str, Any]]


@define
class Position:
    seq: int
    epoch: str


@frozen
class Decision:
    """What to do with one UPDATE or ALERT: ``apply`` it to the state (and emit ``update``),
    ``emit`` it (an ALERT shown to the user), ``ask`` again for its topic now."""

    apply: bool
    emit: bool
    ask: bool


@frozen
class Answer:
    """What a SNAPSHOT tells the user: the ALERTs of ``missedAlerts`` not shown yet (in order), and
    the ``recovered`` and ``alertsLost`` topics."""

    alerts: list[dict[str, Any]]
    recovered: list[str]
    alerts_lost: list[str]


class Positions:
    def __init__(self, alert_memory: int = ALERT_MEMORY) -> None:
        self._last: dict[str, Position] = {}
        self._asked: set[str] = set()  # asked again with since; the answer has not arrived yet
        self._shown: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._memory = alert_memory

    def get(self, topic: str) -> Position | None:
        return self._last.get(topic)

    def topics(self) -> list[str]:
        return list(self._last)

    def since(self, keep: Callable[[str], bool] = lambda _: True) -> Since:
        """``{topic: {"seq", "epoch"}}`` for the topics with a position that ``keep`` accepts."""
        return {t: {"seq": p.seq, "epoch": p.epoch} for t, p in self._last.items() if keep(t)}

    def since_of(self, topic: str) -> Since | None:
        """The ``since`` of an ask for one topic (None when its position is unknown)."""
        return self.since(lambda t: t == topic) or None

    def retain(self, keep: Callable[[str], bool]) -> None:
        """Forget the topics for which ``keep`` is false (unsubscribed, no longer offered)."""
        for topic in [t for t in self._last if not keep(t)]:
            del self._last[topic]
            self._asked.discard(topic)

    def new_connection(self) -> None:
        """No ask of the old connection will be answered."""
        self._asked.clear()

    def asking(self, topics: Iterable[str]) -> None:
        """An ask for these topics was sent by other means (a subscribe with since after connect)."""
        self._asked.update(topics)

    def ask_failed(self, topics: Iterable[str] | None = None) -> None:
        """An ERROR answered the ask (e.g. ``rate_limited``): the next gap asks again."""
        self._asked.difference_update(self._asked.copy() if topics is None else topics)

    def snapshot(self, msg: Mapping[str, Any]) -> Answer:
        """Take a SNAPSHOT's positions and recovery fields. Every section replaces its topic's
        position (a section without one, from a server before version 1.1, forgets it: numbering
        against it could drop every later message as a duplicate)."""
        positions = _mapping(msg.get("positions"))
        new_epoch = []
        for topic in _mapping(msg.get("data")):
            p, had = positions.get(topic), self._last.get(topic)
            if had is not None and _is_position(p) and p["epoch"] != had.epoch:
                new_epoch.append(topic)
            if _is_position(p):
                self._last[topic] = Position(p["seq"], p["epoch"])
            else:
                self._last.pop(topic, None)
            self._asked.discard(topic)
        recovered, lost = _strings(msg.get("recovered")), _strings(msg.get("alertsLost"))
        # A section in a new epoch for a topic we had a position in: the server's history
        # restarted, so ALERTs may have been missed, whether or not this SNAPSHOT answers a since.
        lost += [t for t in new_epoch if t not in lost]
        self._asked.difference_update(recovered, lost)
        alerts = []
        for topic, listed in _mapping(msg.get("missedAlerts")).items():
            for alert in listed if isinstance(listed, list) else ():
                if not isinstance(alert, dict):
                    continue
                last, seq = self._last.get(topic), alert.get("seq")
                if _is_seq(seq) and last is not None and not self._remember(topic, last.epoch, seq):
                    continue
                alerts.append(alert if "topic" in alert else {**alert, "topic": topic})
        return Answer(alerts, recovered, lost)

    def message(self, msg: Mapping[str, Any]) -> Decision:
        topic, seq = msg.get("topic"), msg.get("seq")
        alert = msg.get("type") == "ALERT"
        last = self._last.get(topic) if isinstance(topic, str) else None
        if last is None or not _is_seq(seq):
            return Decision(True, alert, False)  # nothing to number against
        assert isinstance(topic, str) and isinstance(seq, int)
        if seq <= last.seq:
            return Decision(False, False, False)  # a duplicate: already applied
        if seq == last.seq + 1:
            last.seq = seq
            return Decision(True, alert and self._remember(topic, last.epoch, seq), False)
        # A gap: this message cannot be applied on top of the state; the answer to the ask brings
        # it (replayed, or inside a section). An ALERT is shown now all the same.
        ask = topic not in self._asked
        self._asked.add(topic)
        return Decision(False, alert and self._remember(topic, last.epoch, seq), ask)

    def _remember(self, topic: str, epoch: str, seq: int) -> bool:
        """Remember a shown ALERT; False when it was shown already."""
        key = (topic, epoch, seq)
        if key in self._shown:
            return False
        self._shown[key] = None
        if len(self._shown) > self._memory:
            self._shown.popitem(last=False)
        return True


def recovery_url(base: str, topics: list[str] | None, since: Since, max_length: int = MAX_URL) -> tuple[str, dict[str, Any] | None]:
    """The handshake URL of a reconnect with ``topics`` (None keeps the server's default set) and
    ``since``; and, when that URL would pass ``max_length``, the one with only the first position
    plus the subscribe that asks for the others right after the ``connection`` message (the
    URL's ``topics=`` counts as the first subscribe: the later one adds to it)."""

    def build(ts: list[str] | None, s: Since) -> str:
        parts = urlsplit(base)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("topics", "since")]
        if ts is not None:
            query.append(("topics", ",".join(ts)))
        if s:
            query.append(("since", json.dumps(s, separators=(",", ":"))))
        return urlunsplit(parts._replace(query=urlencode(query)))

    url = build(topics, since)
    names = list(since)
    if len(url) <= max_length or len(names) < 2:
        return url, None
    first, rest = names[0], names[1:]
    later = {"action": "subscribe", "topics": topics if topics is not None else names, "since": {t: since[t] for t in rest}, "snapshot": True}
    return build([first], {first: since[first]}), later


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_position(p: Any) -> bool:
    return isinstance(p, dict) and _is_seq(p.get("seq")) and isinstance(p.get("epoch"), str)
