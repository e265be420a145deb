"""The garbage collector's policy (uipd.runtime.collector): survivors frozen every interval, a
full pass (reclaim) only once closed connections outnumber the open ones RECLAIM_RATIO times
over, never in the middle of a close storm, nor while draining."""

from __future__ import annotations

import gc

import trio

from uipd.runtime import collector
from uipd.runtime.collector import RECLAIM_FLOOR, RECLAIM_MIN_INTERVAL, RECLAIM_RATIO, ReclaimPolicy, manage_collector


def _never() -> int:
    raise AssertionError("the frozen objects were counted (walks all of them) when no look was due")


def test_a_reclaim_waits_for_ratio_times_the_open_connections_to_close() -> None:
    policy = ReclaimPolicy()
    policy.reclaimed(closed=0, frozen=100_000, now=0.0)
    open_ = 1000
    need = RECLAIM_RATIO * open_
    assert not policy.due(need // 2, open_, _never, 1.0)
    assert not policy.due(need, open_, _never, 2.0)  # enough, but closing fast: a storm in progress
    assert policy.due(need + 10, open_, _never, 3.0)  # it calmed down
    policy.reclaimed(need + 10, 100_000, 3.0)
    assert not policy.due(need + 10 + RECLAIM_FLOOR - 1, 0, _never, 4.0)  # the floor, with none open
    assert policy.due(need + 10 + RECLAIM_FLOOR - 1 + 1, 0, _never, 5.0)


def test_frozen_growth_is_looked_at_once_per_interval() -> None:
    policy = ReclaimPolicy()
    policy.reclaimed(closed=0, frozen=1000, now=0.0)
    assert not policy.due(0, 10, _never, RECLAIM_MIN_INTERVAL - 1)
    counted = []
    assert policy.due(0, 10, lambda: counted.append(1) or 2001, RECLAIM_MIN_INTERVAL) and counted == [1]
    policy.reclaimed(0, 2001, RECLAIM_MIN_INTERVAL)
    assert not policy.due(0, 10, lambda: 3000, 2 * RECLAIM_MIN_INTERVAL)  # grew, but not doubled


async def test_the_task_freezes_survivors_reclaims_and_restores_the_thresholds(monkeypatch, autojump_clock) -> None:
    before = gc.get_threshold()
    freezes, collects, unfreezes = [], [], []
    monkeypatch.setattr(collector.gc, "freeze", lambda: freezes.append(1))
    monkeypatch.setattr(collector.gc, "unfreeze", lambda: unfreezes.append(1))
    garbage = [1]  # what each collection finds
    monkeypatch.setattr(collector.gc, "collect", lambda generation=2: collects.append(generation) or garbage[0])
    monkeypatch.setattr(collector.gc, "get_count", lambda: (collector.YOUNG_GARBAGE_FLOOR, 0, 0))
    closed, paused = [0], [False]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: manage_collector(lambda: closed[0], lambda: 10, lambda: paused[0], interval=1.0, task_status=task_status))
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
        await trio.sleep(3.5)
        assert collects == [1, 1, 1] and len(freezes) == 3 and unfreezes == []
        closed[0] = RECLAIM_FLOOR  # enough closed, and calm since the previous tick? not yet: all in one tick
        await trio.sleep(1.0)
        assert collects[-1] == 1
        await trio.sleep(1.0)
        assert collects[-1] == 2 and unfreezes == [1]  # the full pass, between an unfreeze and a freeze
        garbage[0] = 0  # the young collections find nothing: put off for YOUNG_BACKOFF, the freezes go on
        await trio.sleep(1.0)
        n, frozen = len(collects), len(freezes)
        await trio.sleep(collector.YOUNG_BACKOFF - 2.5)  # ticks fall between the test's wake-ups, never on them
        assert len(collects) == n and len(freezes) >= frozen + int(collector.YOUNG_BACKOFF - 3)
        await trio.sleep(2.5)
        assert len(collects) == n + 1
        paused[0] = True
        n = len(collects)
        closed[0] += 10 * RECLAIM_FLOOR
        await trio.sleep(5.0)
        assert len(collects) == n  # draining: nothing
        nursery.cancel_scope.cancel()
    assert gc.get_threshold() == before



def test_young_collections_wait_while_they_find_nothing_and_never_run_for_a_quiet_second() -> None:
    young = collector.YoungPolicy()
    floor, backoff = collector.YOUNG_GARBAGE_FLOOR, collector.YOUNG_BACKOFF
    assert not young.due(floor - 1, 0.0)  # an idle second: almost nothing made that was not freed
    assert young.due(floor, 0.0)
    young.collected(0, 0.0)
    assert not young.due(10 * floor, backoff - 0.1)  # a storm of live objects: no walk every second
    assert young.due(10 * floor, backoff)
    young.collected(5, backoff)
    assert young.due(floor, backoff + 1.0)  # it found garbage: every second again
