"""The wait before the next retry, doubling up to a maximum: uipd's one backoff.

Pure arithmetic, no clock and no I/O (so the Python client and the accept loop use it without
pulling in the config or pluggy); re-exported by :mod:`uipd.plugin_tools` (public plugin API)
and :mod:`uipd.client`.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

__all__ = ["Backoff"]


@define
class Backoff:
    """The wait before each retry: ``first``, then doubling on each further failure up to
    ``maximum``; :meth:`reset` after a success (or :meth:`after_run` after a long enough healthy
    run) starts over.  uipd's one backoff: its sources' restarts, its Redis reconnects and the
    Python client's reconnects (``uipd.client``, with ``jitter``) use it too.

    Pure arithmetic, no clock: the caller sleeps (``await trio.sleep(backoff.next())``).
    """

    first: float
    maximum: float
    jitter: Callable[[], float] | None = None
    """A source of random numbers in [0, 1) (``random.random``): each wait is then drawn between
    ``first / 2`` and the doubling step ("full jitter", as the browser client does), so that the
    many clients a restart cut off do not all come back at the same instant.  None: the step."""
    healthy_after: float | None = None
    """A run that lasted this many seconds before it failed counts as a success for
    :meth:`after_run` (a source that worked for an hour restarts quickly); None: never."""
    delay: float = field(init=False)
    """The step :meth:`next` waits next (with ``jitter``, the most it may wait)."""

    def __attrs_post_init__(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The wait before this retry; the following one will be twice as long (up to ``maximum``)."""
        step = self.delay
        self.delay = min(step * 2, self.maximum)
        if self.jitter is None:
            return step
        low = self.first / 2
        return low + self.jitter() * max(0.0, step - low)

    def after_run(self, lasted: float) -> float:
        """The wait before retrying something that ran ``lasted`` seconds and then failed: the
        waits start over first if that run was a healthy one (``healthy_after``)."""
        if self.healthy_after is not None and lasted >= self.healthy_after:
            self.reset()
        return self.next()

    def reset(self) -> None:
        """Start over from ``first``."""
        self.delay = self.first
