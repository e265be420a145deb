"""Small helpers every source plugin ends up needing; public plugin API, like :mod:`uipd.plugin`.

- attrs validators for option fields (:func:`positive`, :func:`non_negative`, :func:`not_empty`,
  :func:`http_url`, :func:`optional_http_url`).  Their ``ValueError`` message starts with the
  field name, which uipd reports under the key (``FILE: sources.NAME: interval must be ...``)::

      @frozen
      class Options:
          url: str = field(validator=http_url)
          interval: float = field(default=5.0, validator=positive)

- :class:`Backoff`: the wait before the next retry, doubling up to a maximum, reset on success.
- :class:`HealthLog`: logs a failing feed once per change of state (a new reason, then the
  recovery) instead of once per attempt; given a Backoff, it also waits between attempts.
- :func:`parse_json`: decode a payload a source received; whatever JSON uipd cannot publish
  (NaN, Infinity, nesting past the decoder) is a ``ValueError`` like any bad JSON.
- :class:`RepeatLog`: logs a repeating problem (bad messages, refused publishes) without flooding:
  the first in full, then at most one summary line per interval with the count and the last one.
- :func:`publishable`: after a publish of many entities was refused, splits them into those uipd
  takes and those it refuses (with the reason), so one bad entity does not hold back the others.
- :func:`replace_publishable`: ``Publisher.replace`` that publishes the entities uipd takes when
  it refuses some, keeping each refused one's last good version.

The retry loop of a poller::

    health = HealthLog(o.url, log, backoff=Backoff(o.retry_min_backoff, o.retry_max_backoff))
    while True:
        try:
            document = await fetch()
        except FetchError as exc:
            await health.retry_later(str(exc))   # logs a new reason once, sleeps the backoff
            continue
        health.succeeded()                       # logs the recovery once, resets the backoff
        ...
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio
from attrs import define, field

from uipd.config import non_negative, positive
from uipd.core.backoff import Backoff
from uipd.core.errors import PublishError
from uipd.core.publish import check_entity
from uipd.plugin import Publisher

__all__ = [
    "Backoff", "HealthLog", "RepeatLog", "http_url", "non_negative", "not_empty", "optional_http_url", "parse_json", "positive",
    "publishable", "replace_publishable",
]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(data: str | bytes, *, non_finite: bool = False) -> Any:
    """``json.loads`` as strict as uipd: Python's decoder accepts NaN and Infinity, which JSON
    (and so a publish) cannot carry, and raises RecursionError, not ValueError, for a payload
    nested past its limit; both become a ``ValueError`` (so does undecodable UTF-8).

    ``non_finite=True`` lets NaN and Infinity through as floats, for a caller that publishes the
    entities one by one (:func:`replace_publishable`): the publish then refuses just the entity
    holding one, naming where it is, instead of the whole document."""
    try:
        return json.loads(data) if non_finite else json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deep") from None


# -- attrs validators ---------------------------------------------------------------------------


# positive, non_negative: uipd's own (uipd.config), so NaN and infinity are refused in options too.


def not_empty(instance: Any, attribute: Any, value: str) -> None:
    """attrs validator: the string (or sequence) must not be empty."""
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


def http_url(instance: Any, attribute: Any, value: str) -> None:
    """attrs validator: an ``http://`` or ``https://`` URL (the empty string is refused)."""
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def optional_http_url(instance: Any, attribute: Any, value: str) -> None:
    """attrs validator: empty (not set), or an ``http://`` or ``https://`` URL."""
    if value:
        http_url(instance, attribute, value)


# -- retrying (Backoff: uipd.core.backoff, re-exported here) ---------------------------------


@define
class HealthLog:
    """Logs a feed's failures once per change of state instead of once per attempt.

    ``failed(reason, retry_in)`` logs a WARNING when ``reason`` differs from the last one;
    ``succeeded()`` logs one INFO "recovered" line if anything failed since the last success.
    With a ``backoff``, ``await retry_later(reason)`` is ``failed`` and then the backoff's wait,
    and ``succeeded()`` resets it.
    """

    what: str
    """Names the thing being polled or connected to in every message (e.g. the URL)."""
    logger: logging.Logger
    backoff: Backoff | None = None
    """The waits of :meth:`retry_later`."""
    action: str = "retrying with backoff"
    """What happens next, in the warning: ``"<what>: <reason>; <action> (next in N s)"``."""
    reason: str | None = None
    """Why the last attempt failed; None when it succeeded."""
    failures: int = 0
    """Consecutive failed attempts."""

    def failed(self, reason: str, retry_in: float) -> None:
        """One more failed attempt; the next one is in ``retry_in`` seconds."""
        self.failures += 1
        if reason != self.reason:
            self.logger.warning("%s: %s; %s (next in %.3g s)", self.what, reason, self.action, retry_in)
            self.reason = reason

    async def retry_later(self, reason: str) -> None:
        """One more failed attempt: log it (once per reason) and sleep the backoff's next wait."""
        if self.backoff is None:
            raise TypeError("HealthLog.retry_later needs a backoff")
        delay = self.backoff.next()
        self.failed(reason, delay)
        await trio.sleep(delay)

    def succeeded(self) -> None:
        """An attempt worked: logs the recovery if it follows failures, resets the backoff."""
        if self.reason is not None:
            self.logger.info("%s: recovered after %d failed attempt(s)", self.what, self.failures)
        self.reason = None
        self.failures = 0
        if self.backoff is not None:
            self.backoff.reset()


# -- repeating problems -------------------------------------------------------------------------


@define
class RepeatLog:
    """Logs a problem that may repeat many times a second without flooding the log.

    The first :meth:`report` is logged in full (``"<what>: <detail>"``); later ones within
    ``interval`` of the last line are only counted, and the next line is a summary
    (``"<what>: 573 more <events> in the last 10 s; last: <detail>"``), logged by a report once
    the interval is over or by :meth:`flush`, which a periodic task calls so that the tail of a
    burst is logged too.  Every report is in some line's count.  After a quiet interval the next
    report is logged in full again.
    """

    what: str
    """Names the thing with the problem in every line (e.g. ``"source parking"``)."""
    logger: logging.Logger
    interval: float = 10.0
    """Seconds between two lines at least."""
    events: str = "occurrences"
    """What is counted, in the summary: ``"publishes refused"``, ``"messages dropped"``."""
    level: int = logging.WARNING
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    """Every report so far."""
    pending: int = 0
    """Reports not in any line yet."""
    last: str = ""
    """The detail of the latest pending report."""
    _logged_at: float | None = field(default=None, init=False)

    def report(self, detail: str) -> None:
        """One more occurrence; ``detail`` says what it was (the reason, which item)."""
        self.total += 1
        now = self.clock()
        if self._logged_at is None or (not self.pending and now - self._logged_at >= self.interval):
            self.logger.log(self.level, "%s: %s", self.what, detail)
            self._logged_at = now
            return
        self.pending += 1
        self.last = detail
        self._summarise(now)

    def flush(self) -> None:
        """Log the summary of the pending reports if the interval since the last line is over."""
        self._summarise(self.clock())

    def _summarise(self, now: float) -> None:
        if self.pending and self._logged_at is not None and now - self._logged_at >= self.interval:
            if self.pending == 1:  # a summary of one is that one
                self.logger.log(self.level, "%s: %s", self.what, self.last)
            else:
                self.logger.log(self.level, "%s: %d more %s in the last %.0f s; last: %s", self.what, self.pending, self.events, now - self._logged_at, self.last)
            self.pending = 0
            self._logged_at = now


def publishable(entities: Iterable[Any]) -> tuple[list[Any], list[tuple[Any, str]]]:
    """``entities`` split into those uipd would publish and those it refuses, each with uipd's
    reason.  Checks each entity alone, which costs about a publish: call it after a publish of
    the batch raised ``ValueError``, then publish the good ones and report the others."""
    good: list[Any] = []
    bad: list[tuple[Any, str]] = []
    for entity in entities:
        try:
            check_entity(entity)
        except PublishError as err:
            bad.append((entity, err.message))
        else:
            good.append(entity)
    return good, bad


def replace_publishable(publisher: Publisher, topic: str, entities: Iterable[Any]) -> tuple[int | None, list[tuple[Any, str]]]:
    """``publisher.replace(topic, entities)``; if uipd refuses some of the entities, the others are
    published and each refused one that was published before keeps its last good version (rather
    than being removed: a bad edit is not a deletion).  Returns the seq (None: nothing changed) and
    the refused entities with uipd's reasons (empty when the whole batch went through).  A refusal
    that is not any entity's (a topic the source does not provide) raises ``ValueError`` as usual."""
    entities = list(entities)
    try:
        return publisher.replace(topic, entities), []
    except ValueError:  # uipd logged and counted the refusal
        good, bad = publishable(entities)
        if not bad:
            raise
    current = publisher.current(topic)
    ids = {str(e["id"]) for e, _ in bad if isinstance(e, dict) and isinstance(e.get("id"), (str, int)) and not isinstance(e["id"], bool)}
    return publisher.replace(topic, good + [current[key] for key in ids if key in current]), bad
