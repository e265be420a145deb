"""uipd.plugin_tools, the helpers plugins build on (public API): Backoff, HealthLog, parse_json, the
option validators, publishable and replace_publishable.  RepeatLog is tested in
tests/sources/test_refusals.py, ``positive`` against NaN in tests/sources/test_registry.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from attrs import field, frozen

from uipd.plugin_tools import (
    Backoff,
    HealthLog,
    http_url,
    non_negative,
    not_empty,
    optional_http_url,
    parse_json,
    positive,
    publishable,
    replace_publishable,
)
from uipd.testing import FakePublisher

# -- Backoff ----------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum_and_reset_starts_over():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert [b.next() for _ in range(2)] == [0.5, 1.0]


def test_backoff_with_jitter_waits_between_half_the_first_and_the_step():
    draws = iter([0.0, 1.0, 0.5, 0.25])
    b = Backoff(1.0, 4.0, jitter=lambda: next(draws))
    # steps 1, 2, 4, 4; each wait is first/2 + draw * (step - first/2)
    assert [b.next() for _ in range(4)] == [0.5, 2.0, 2.25, 1.375]
    assert b.delay == 4.0


def test_backoff_after_a_healthy_run_starts_over_and_after_a_short_one_goes_on():
    b = Backoff(0.5, 60.0, healthy_after=60.0)
    assert [b.after_run(1.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert b.after_run(59.9) == 4.0
    assert b.after_run(60.0) == 0.5, "a run of healthy_after seconds counts as a success"
    assert b.after_run(0.0) == 1.0
    assert Backoff(0.5, 60.0).after_run(3600.0) == 0.5 and Backoff(0.5, 60.0).after_run(0) == 0.5
    never = Backoff(0.5, 60.0)
    never.next()
    assert never.after_run(10**6) == 1.0, "without healthy_after no run resets it"


# -- HealthLog --------------------------------------------------------------------------------------


def test_health_log_logs_each_new_reason_once_and_the_recovery_once(caplog):
    caplog.set_level(logging.INFO, logger="feed")
    health = HealthLog("http://x/feed", logging.getLogger("feed"))
    health.failed("HTTP 503", 1.0)
    health.failed("HTTP 503", 2.0)
    health.failed("timed out", 4.0)
    assert health.failures == 3 and health.reason == "timed out"
    health.succeeded()
    health.succeeded()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "http://x/feed: HTTP 503; retrying with backoff (next in 1 s)"),
        ("WARNING", "http://x/feed: timed out; retrying with backoff (next in 4 s)"),
        ("INFO", "http://x/feed: recovered after 3 failed attempt(s)"),
    ]
    assert health.failures == 0 and health.reason is None


async def test_health_log_retry_later_sleeps_the_backoff_and_success_resets_it(autojump_clock, caplog):
    caplog.set_level(logging.WARNING, logger="feed")
    backoff = Backoff(0.5, 2.0)
    health = HealthLog("broker", logging.getLogger("feed"), backoff=backoff, action="reconnecting")
    slept = []
    for _ in range(4):
        start = trio.current_time()
        await health.retry_later("refused")
        slept.append(trio.current_time() - start)
    assert slept == pytest.approx([0.5, 1.0, 2.0, 2.0])
    assert [r.getMessage() for r in caplog.records] == ["broker: refused; reconnecting (next in 0.5 s)"]
    health.succeeded()
    assert backoff.delay == 0.5
    with pytest.raises(TypeError, match="needs a backoff"):
        await HealthLog("x", logging.getLogger("feed")).retry_later("down")


# -- parse_json -------------------------------------------------------------------------------------


def test_parse_json_refuses_what_uipd_cannot_publish_as_value_errors():
    assert parse_json('{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert parse_json(b'[true]') == [True]
    for bad in ("[NaN]", '{"v": Infinity}', "-Infinity", "{", "[" * 100000, b"\xff\xfe"):
        with pytest.raises(ValueError):
            parse_json(bad)
    with pytest.raises(ValueError, match="nested too deep"):
        parse_json("[" * 100000)
    nan = parse_json("[NaN]", non_finite=True)[0]
    assert nan != nan, "non_finite=True lets NaN through, for a publish to refuse entity by entity"


# -- option validators ------------------------------------------------------------------------------


@frozen
class Options:
    url: str = field(default="http://x", validator=http_url)
    notify_url: str = field(default="", validator=optional_http_url)
    topic: str = field(default="t", validator=not_empty)
    interval: float = field(default=1.0, validator=positive)
    jitter: float = field(default=0.0, validator=non_negative)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": ""}, "url"),
        ({"url": "ftp://x"}, "url"),
        ({"notify_url": "x"}, "notify_url"),
        ({"topic": ""}, "topic"),
        ({"interval": 0}, "interval"),
        ({"interval": -1.0}, "interval"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
    ],
)
def test_validators_refuse_bad_options_naming_the_field(options: dict[str, Any], key: str):
    with pytest.raises(ValueError) as info:
        Options(**options)
    assert key in str(info.value)


def test_validators_take_good_options():
    o = Options(url="https://x/y", notify_url="http://me/hook", topic="cameras", interval=0.01, jitter=0)
    assert (o.url, o.notify_url, o.interval, o.jitter) == ("https://x/y", "http://me/hook", 0.01, 0)
    assert Options(notify_url="").notify_url == "", "empty: not set"


# -- publishable, replace_publishable ---------------------------------------------------------------

def test_publishable_splits_what_uipd_takes_from_what_it_refuses_with_reasons():
    good = [{"id": 1}, {"id": "x", "v": [1, {"k": None}]}]
    bad = [{"id": 2, "v": float("nan")}, {"v": 1}, {"id": True}, "not an object"]
    ok, refused = publishable([good[0], bad[0], bad[1], good[1], bad[2], bad[3]])
    assert ok == good
    assert [entity for entity, _ in refused] == bad
    assert all(isinstance(reason, str) and reason for _, reason in refused)
    assert "NaN" in refused[0][1]
    assert publishable([]) == ([], [])


def test_replace_publishable_publishes_the_good_and_keeps_a_refused_entitys_last_version():
    pub = FakePublisher(["t"])
    assert replace_publishable(pub, "t", [{"id": 1, "v": 1}, {"id": 2, "v": 1}]) == (1, [])
    seq, refused = replace_publishable(pub, "t", [{"id": 1, "v": float("nan")}, {"id": 2, "v": 2}, {"id": 3, "v": float("inf")}])
    assert seq == 2 and [e["id"] for e, _ in refused] == [1, 3]
    assert pub.state["t"] == {"1": {"id": 1, "v": 1}, "2": {"id": 2, "v": 2}}, "1 keeps its last good version, 3 never arrives"
    assert pub.updates[-1] == ("t", [{"id": 2, "v": 2}], [])
    assert pub.publisher.refused["bad_request"] == 1, "the refused batch is counted by the daemon's publisher"
    assert replace_publishable(pub, "t", [{"id": 1, "v": 1}, {"id": 2, "v": 2}]) == (None, []), "nothing changed"
    with pytest.raises(ValueError, match="does not provide topic"):
        replace_publishable(pub, "other", [{"id": 1}])
