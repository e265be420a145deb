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

import logging
from typing import Any

import trio
from attrs import define, field

__all__ = ["Backoff", "HealthLog", "http_url", "non_negative", "not_empty", "optional_http_url", "positive"]


# -- attrs validators ---------------------------------------------------------------------------


def positive(instance: Any, attribute: Any, value: float) -> None:
    """attrs validator: the number must be greater than 0."""
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


def non_negative(instance: Any, attribute: Any, value: float) -> None:
    """attrs validator: the number must be 0 or more."""
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value!r}")


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


# -- retrying -----------------------------------------------------------------------------------


@define
class Backoff:
    """The wait before each retry: ``first``, then doubling on each further failure up to
    ``maximum``; :meth:`reset` after a success (or a long enough healthy run) starts over.

    Pure arithmetic, no clock: the caller sleeps (``await trio.sleep(backoff.next())``).
    """

    first: float
    maximum: float
    delay: float = field(init=False)
    """The wait :meth:`next` returns next."""

    def __attrs_post_init__(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The wait before this retry; the following one will be twice as long (up to ``maximum``)."""
        delay = self.delay
        self.delay = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start over from ``first``."""
        self.delay = self.first


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
