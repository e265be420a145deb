"""Logging a poller's failures once per change of state instead of once per attempt."""

from __future__ import annotations

import logging

from attrs import define


@define
class FailureLog:
    """Remembers why the last attempt failed: a new reason is logged once, recovery once."""

    what: str
    """Names the thing being polled in every message (e.g. the URL)."""
    logger: logging.Logger
    reason: str | None = None
    failures: int = 0
    """Consecutive failed attempts."""

    def failed(self, reason: str, retry_in: float) -> None:
        self.failures += 1
        if reason != self.reason:
            self.logger.warning("%s: %s; retrying with backoff (next in %.3g s)", self.what, reason, retry_in)
            self.reason = reason

    def succeeded(self) -> None:
        if self.reason is not None:
            self.logger.info("%s: recovered after %d failed attempt(s)", self.what, self.failures)
        self.reason = None
        self.failures = 0
