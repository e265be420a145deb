from __future__ import annotations

from uipd.core.ratelimit import RateVerdict, TokenBucket


def test_burst_then_limited_then_close() -> None:
    bucket = TokenBucket.start(rate=1.0, burst=5, strikes_allowed=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [RateVerdict.OK] * 5
    assert [bucket.take(0.0) for _ in range(3)] == [RateVerdict.LIMITED] * 3
    assert bucket.take(0.0) is RateVerdict.CLOSE
    assert bucket.take(0.0) is RateVerdict.CLOSE


def test_refill_over_time_and_strikes_reset() -> None:
    bucket = TokenBucket.start(rate=2.0, burst=2, strikes_allowed=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.0) is RateVerdict.LIMITED
    assert bucket.take(0.1) is RateVerdict.LIMITED  # 0.2 tokens
    assert bucket.take(0.5) is RateVerdict.OK  # 1.0 tokens by now
    assert bucket.strikes == 0
    assert bucket.take(0.5) is RateVerdict.LIMITED
    assert bucket.take(0.5) is RateVerdict.LIMITED
    assert bucket.take(0.5) is RateVerdict.CLOSE


def test_tokens_capped_at_burst() -> None:
    bucket = TokenBucket.start(rate=100.0, burst=3, strikes_allowed=0, now=0.0)
    assert bucket.take(1000.0) is RateVerdict.OK
    assert bucket.tokens <= 3
    assert bucket.take(1000.0) is RateVerdict.OK
    assert bucket.take(1000.0) is RateVerdict.OK
    # strikes_allowed=0: the first limited message already closes.
    assert bucket.take(1000.0) is RateVerdict.CLOSE


def test_rate_zero_disables() -> None:
    bucket = TokenBucket.start(rate=0.0, burst=0, strikes_allowed=0, now=0.0)
    assert all(bucket.take(0.0) is RateVerdict.OK for _ in range(1000))
