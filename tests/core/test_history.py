"""uipd.core.history: a topic's last frames, bounded by count and age, contiguous in seq."""

from __future__ import annotations

from uipd.core.history import HistoryEntry, TopicHistory


def filled(size: int, ttl: float, seqs: range, at: float = 0.0) -> TopicHistory:
    h = TopicHistory(size, ttl)
    for s in seqs:
        h.append(s, b"f%d" % s, s % 3 == 0, at)
    return h


def seqs(entries: list[HistoryEntry] | None) -> list[int] | None:
    return None if entries is None else [e.seq for e in entries]


def test_after_returns_the_tail_when_history_reaches_back() -> None:
    h = filled(10, 60, range(1, 8))
    assert seqs(h.after(3, 1.0)) == [4, 5, 6, 7]
    assert seqs(h.after(0, 1.0)) == [1, 2, 3, 4, 5, 6, 7]
    assert h.after(7, 1.0) == []
    assert h.messages == 7 and h.bytes == sum(len(b"f%d" % s) for s in range(1, 8))
    assert [e.alert for e in h.after(2, 1.0)] == [True, False, False, True, False]


def test_count_bound_and_too_old() -> None:
    h = filled(3, 60, range(1, 8))
    assert h.messages == 3 and h.first_seq == 5
    assert seqs(h.after(4, 1.0)) == [5, 6, 7]
    assert h.after(3, 1.0) is None  # 4 was dropped
    assert h.bytes == 6


def test_ttl_drops_old_entries_on_append_and_on_read() -> None:
    h = TopicHistory(100, 10.0)
    h.append(1, b"a", False, 0.0)
    h.append(2, b"b", False, 5.0)
    assert seqs(h.after(0, 9.0)) == [1, 2]
    assert h.after(0, 12.0) is None  # 1 expired on read
    assert seqs(h.after(1, 12.0)) == [2]
    h.append(3, b"c", False, 16.0)  # 2 expires on append
    assert h.messages == 1 and h.bytes == 1


def test_a_gap_clears_the_history() -> None:
    h = filled(10, 60, range(1, 5))
    h.append(9, b"x", False, 0.0)
    assert h.messages == 1 and h.first_seq == 9
    assert h.after(4, 0.0) is None


def test_size_zero_is_off() -> None:
    h = filled(0, 60, range(1, 5))
    assert h.messages == 0 and h.bytes == 0 and h.after(0, 0.0) is None


def test_configure_trims_and_turns_off() -> None:
    h = filled(10, 60, range(1, 9))
    h.configure(4, 60)
    assert h.first_seq == 5 and h.bytes == 8
    h.configure(0, 60)
    assert h.messages == 0 and h.bytes == 0


def test_backfill_prepends_the_contiguous_run_within_size() -> None:
    h = filled(6, 60, range(5, 8))
    older = [HistoryEntry(s, b"o%d" % s, False, 0.0) for s in (1, 2, 3, 4, 5)]
    h.backfill(older)  # 5 is held already; 2-4 fit (size 6), 1 does not
    assert seqs(h.after(1, 0.0)) == [2, 3, 4, 5, 6, 7]
    assert h.after(1, 0.0)[0].frame == b"o2" and h.after(4, 0.0)[0].frame == b"f5"
    assert h.bytes == 3 * 2 + 3 * 2
    h.backfill([HistoryEntry(0, b"z", False, 0.0)])  # full: nothing taken
    assert h.messages == 6


def test_backfill_stops_at_a_gap_and_fills_an_empty_history() -> None:
    h = filled(10, 60, range(5, 7))
    h.backfill([HistoryEntry(s, b"o", False, 0.0) for s in (1, 2, 4)])  # 3 missing: only 4 joins
    assert h.first_seq == 4
    empty = TopicHistory(10, 60)
    empty.backfill([HistoryEntry(s, b"o", False, 0.0) for s in (1, 3, 4)])
    assert seqs(empty.after(2, 0.0)) == [3, 4]


def test_a_byte_bound_drops_the_oldest_messages_and_always_keeps_the_newest():
    history = TopicHistory(size=1000, ttl=300.0, max_bytes=250)
    for seq in range(1, 6):
        history.append(seq, b"x" * 100, False, now=0.0)
    assert (history.first_seq, history.last_seq, history.bytes) == (4, 5, 200)
    assert history.after(2, now=0.0) is None  # message 3 is gone: the gap cannot be replayed
    assert [e.seq for e in history.after(3, now=0.0)] == [4, 5]
    history.append(6, b"y" * 1000, False, now=0.0)  # larger than the bound on its own: still kept
    assert (history.first_seq, history.last_seq, history.bytes) == (6, 6, 1000)
    history.configure(1000, 300.0, 0)  # no byte bound any more
    history.append(7, b"z" * 1000, False, now=0.0)
    assert history.messages == 2
