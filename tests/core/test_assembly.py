"""uipd.core.assembly: a fragmented message gathered in one buffer, bounded in bytes and frames."""

from __future__ import annotations

from uipd.core.assembly import MessageAssembler, Piece, over_limit


def test_fragments_and_partial_frames_make_one_message() -> None:
    a = MessageAssembler(max_bytes=100, max_fragments=4)
    assert a.feed('{"act', False, False) is Piece.PARTIAL  # part of a frame: no fragment yet
    assert a.feed('ion":', True, False) is Piece.FRAGMENT
    assert a.feed("", True, False) is Piece.FRAGMENT  # an empty continuation frame counts
    assert a.feed('"ping"}', True, True) is Piece.COMPLETE
    assert a.text() == '{"action":"ping"}'
    assert a.frames == 2


def test_bytes_counted_as_utf8_in_one_buffer() -> None:
    a = MessageAssembler(max_bytes=8, max_fragments=100)
    assert a.feed("\U0001f600", True, False) is Piece.FRAGMENT  # 1 character, 4 bytes
    assert a.held_bytes == 4
    assert a.feed("\U0001f600", True, False) is Piece.FRAGMENT
    assert a.feed("x", True, True) is Piece.TOO_BIG
    assert a.held_bytes == 8  # what was over the bound was never held


def test_a_message_of_exactly_max_fragments_frames_passes_one_more_closes() -> None:
    ok = MessageAssembler(max_bytes=1000, max_fragments=3)
    assert [ok.feed("a", True, False), ok.feed("b", True, False), ok.feed("c", True, True)] == [
        Piece.FRAGMENT, Piece.FRAGMENT, Piece.COMPLETE,
    ]
    endless = MessageAssembler(max_bytes=1000, max_fragments=3)
    assert endless.feed("", True, False) is Piece.FRAGMENT
    assert endless.feed("", True, False) is Piece.FRAGMENT
    assert endless.feed("", True, False) is Piece.TOO_MANY_FRAGMENTS  # it can only go on: over 3


def test_over_limit_counts_utf8_bytes() -> None:
    assert not over_limit("x" * 10, 10)
    assert over_limit("x" * 11, 10)
    assert not over_limit("\u00e9" * 5, 10)  # 10 bytes
    assert over_limit("\u00e9" * 6, 10)
