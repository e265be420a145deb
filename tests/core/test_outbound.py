from __future__ import annotations

import time

import pytest

from uipd.core.outbound import CloseRequest, Delivery, Offer, OutboundQueue


class Waker:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_offer_queues_in_order_and_counts_bytes() -> None:
    q = OutboundQueue(100)
    assert q.offer(b"a" * 10, Delivery.RELIABLE) is Offer.QUEUED
    assert q.offer(b"b" * 20, Delivery.DROPPABLE) is Offer.QUEUED
    assert q.offer(b"s" * 500, Delivery.SNAPSHOT) is Offer.QUEUED
    assert len(q) == 3
    assert q.queued_bytes == 30  # the SNAPSHOT is counted apart
    assert q.queued_snapshot_bytes == 500
    assert q.pending_bytes == 530
    assert q.take() == [b"a" * 10, b"b" * 20, b"s" * 500]
    assert len(q) == 0


def test_wake_only_when_queue_was_idle() -> None:
    waker = Waker()
    q = OutboundQueue(100, waker)
    q.offer(b"1", Delivery.RELIABLE)
    q.offer(b"2", Delivery.RELIABLE)
    assert waker.calls == 1
    q.take()
    q.offer(b"3", Delivery.DROPPABLE)
    assert waker.calls == 2


def test_one_message_always_fits_an_empty_queue() -> None:
    q = OutboundQueue(10)
    assert q.offer(b"x" * 1000, Delivery.DROPPABLE) is Offer.QUEUED
    assert q.offer(b"y", Delivery.DROPPABLE) is Offer.OVERFLOW
    assert q.offer(b"y", Delivery.RELIABLE) is Offer.OVERFLOW


def test_overflow_at_the_bound() -> None:
    q = OutboundQueue(100)
    assert q.offer(b"x" * 60, Delivery.DROPPABLE) is Offer.QUEUED
    assert q.offer(b"x" * 40, Delivery.DROPPABLE) is Offer.QUEUED  # exactly 100
    assert q.offer(b"x", Delivery.DROPPABLE) is Offer.OVERFLOW
    assert q.queued_bytes == 100
    assert len(q) == 2


def test_inflight_bytes_count_until_written() -> None:
    q = OutboundQueue(100)
    q.offer(b"x" * 90, Delivery.DROPPABLE)
    q.take()
    assert q.queued_bytes == 0
    assert q.inflight_bytes == 90
    assert q.pending_bytes == 90
    assert q.offer(b"y" * 20, Delivery.DROPPABLE) is Offer.OVERFLOW
    q.written()
    assert q.pending_bytes == 0
    assert q.offer(b"y" * 20, Delivery.DROPPABLE) is Offer.QUEUED


def test_one_snapshot_on_top_of_the_bound_further_ones_within_it() -> None:
    q = OutboundQueue(100)
    # The first SNAPSHOT always fits, however large (a city's on connect).
    assert q.offer(b"s" * 1000, Delivery.SNAPSHOT) is Offer.QUEUED
    # UPDATEs and replies are not measured against it: a reader is never resynced for it.
    assert q.offer(b"u" * 100, Delivery.DROPPABLE) is Offer.QUEUED
    assert q.pending_bytes == 1100
    # A second SNAPSHOT must fit in the bound with everything pending: it does not.
    assert q.offer(b"t", Delivery.SNAPSHOT) is Offer.OVERFLOW
    q.take()
    assert q.inflight_snapshot_bytes == 1000 and q.queued_snapshot_bytes == 0
    assert q.offer(b"t", Delivery.SNAPSHOT) is Offer.OVERFLOW  # still in flight
    q.written()
    assert q.pending_bytes == 0
    assert q.offer(b"t" * 10, Delivery.SNAPSHOT) is Offer.QUEUED
    assert q.offer(b"v" * 80, Delivery.SNAPSHOT) is Offer.QUEUED  # 90 <= 100: fits the bound
    assert q.offer(b"w" * 11, Delivery.SNAPSHOT) is Offer.OVERFLOW
    assert q.snapshot_bytes == 90


def test_only_the_latest_pong_waits() -> None:
    waker = Waker()
    q = OutboundQueue(1000, waker)
    q.offer(b"c1", Delivery.RELIABLE)
    assert q.offer(b"pong-1", Delivery.PONG) is Offer.QUEUED
    q.offer(b"u1", Delivery.DROPPABLE)
    for i in range(2, 1000):
        assert q.offer(b"pong-%d" % i, Delivery.PONG) is Offer.QUEUED
    assert q.take() == [b"c1", b"pong-999", b"u1"]
    assert q.inflight_bytes == len(b"c1pong-999u1")
    # The pong in flight is not replaced: the next ping's pong is queued after it.
    assert q.offer(b"pong-a", Delivery.PONG) is Offer.QUEUED
    assert q.offer(b"pong-b", Delivery.PONG) is Offer.QUEUED
    assert q.take() == [b"pong-b"]
    q.written()
    assert q.pending_bytes == 0


def test_pong_kept_by_resync_and_still_replaced() -> None:
    q = OutboundQueue(1000)
    q.offer(b"u1", Delivery.DROPPABLE)
    q.offer(b"p1", Delivery.PONG)
    q.offer(b"u2", Delivery.DROPPABLE)
    q.start_resync()
    q.offer(b"p2", Delivery.PONG)
    assert q.take() == [b"p2"]


def test_start_resync_again_is_o1() -> None:
    """A resync already owed is not started again: today's quadratic ping flood (every overflowing
    reply rebuilt the whole queue) is linear."""
    waker = Waker()
    q = OutboundQueue(1 << 30, waker)
    q.offer(b"u", Delivery.DROPPABLE)
    for _ in range(20000):
        q.offer(b"c", Delivery.RELIABLE)
    q.start_resync()
    assert q.dropped_updates == 1 and len(q) == 20000
    calls = waker.calls
    t0 = time.perf_counter()
    for _ in range(2000):  # today: 2000 passes over 20000 frames, seconds
        q.start_resync()
    assert time.perf_counter() - t0 < 0.2
    assert len(q) == 20000 and q.queued_bytes == 20000 and q.dropped_updates == 1
    assert waker.calls == calls  # nothing new for the writer


def test_start_resync_drops_queued_updates_only() -> None:
    waker = Waker()
    q = OutboundQueue(1000, waker)
    q.offer(b"c1", Delivery.RELIABLE)
    q.offer(b"u1", Delivery.DROPPABLE)
    q.offer(b"snap", Delivery.SNAPSHOT)
    q.offer(b"u2", Delivery.DROPPABLE)
    q.offer(b"c2", Delivery.RELIABLE)
    calls = waker.calls
    q.start_resync()
    assert waker.calls == calls + 1
    assert q.resync_pending
    assert q.dropped_updates == 2
    assert q.queued_bytes == 4
    assert q.offer(b"u3", Delivery.DROPPABLE) is Offer.DROPPED
    assert q.dropped_updates == 3
    assert q.offer(b"c3", Delivery.RELIABLE) is Offer.QUEUED
    assert q.take() == [b"c1", b"snap", b"c2", b"c3"]


def test_start_resync_keeps_inflight() -> None:
    q = OutboundQueue(1000)
    q.offer(b"u1", Delivery.DROPPABLE)
    q.take()
    q.offer(b"u2", Delivery.DROPPABLE)
    q.start_resync()
    assert q.inflight_bytes == 2
    assert q.queued_bytes == 0
    assert q.dropped_updates == 1


def test_force_ignores_inflight_but_respects_queued() -> None:
    q = OutboundQueue(100)
    q.offer(b"x" * 100, Delivery.DROPPABLE)
    q.take()
    assert q.force(b"a" * 50)  # only the batch in flight: room
    assert q.force(b"b" * 50)
    assert not q.force(b"c")  # 100 queued: no room
    assert q.take() == [b"a" * 50, b"b" * 50]


@pytest.mark.parametrize("flush", [True, False])
def test_request_close(flush: bool) -> None:
    waker = Waker()
    q = OutboundQueue(100, waker)
    q.offer(b"c", Delivery.RELIABLE)
    q.request_close(1001, "going away", flush=flush)
    assert q.closing == CloseRequest(1001, "going away", flush)
    assert len(q) == (1 if flush else 0)
    assert q.offer(b"d", Delivery.RELIABLE) is Offer.CLOSED
    assert q.offer(b"d", Delivery.DROPPABLE) is Offer.CLOSED
    assert q.offer(b"d", Delivery.SNAPSHOT) is Offer.CLOSED
    assert not q.force(b"d")
    # The first close request wins.
    q.request_close(4008, "slow consumer", flush=False)
    assert q.closing == CloseRequest(1001, "going away", flush)
    assert waker.calls == 2
