"""``RateLimitedLog``: one line per key per interval, then one line saying how many were suppressed.
Pure logic: the clock is injected, the lines are read from the logger."""

from __future__ import annotations

import logging

import pytest

from observability.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="reckon.test-rate")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "reckon.test-rate"]


def limiter(clock: Clock, interval: float = 60.0, max_keys: int = 1024) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger("reckon.test-rate"), interval, clock=clock, max_keys=max_keys)


def test_the_first_line_of_a_key_is_logged_and_the_rest_of_the_interval_is_counted(
    clock: Clock, lines: pytest.LogCaptureFixture
) -> None:
    limited = limiter(clock)

    assert limited.warning("mallory", "reply from %s ignored: unknown correlation %s", "mallory", "c1")
    for n in range(2, 6):
        clock.now += 10
        assert not limited.warning(
            "mallory", "reply from %s ignored: unknown correlation %s", "mallory", f"c{n}"
        )

    assert messages(lines) == ["reply from mallory ignored: unknown correlation c1"]
    assert limited.suppressed_total == 4
    assert lines.records[0].levelno == logging.WARNING


def test_after_the_interval_a_summary_then_the_line_are_logged(
    clock: Clock, lines: pytest.LogCaptureFixture
) -> None:
    limited = limiter(clock)
    limited.warning("mallory", "rejected %s", 1)
    clock.now += 1
    limited.warning("mallory", "rejected %s", 2)
    clock.now += 1
    limited.warning("mallory", "rejected %s", 3)
    clock.now += 60

    assert limited.warning("mallory", "rejected %s", 4)

    assert messages(lines) == [
        "rejected 1",
        "mallory: …2 more suppressed in the last 62s",
        "rejected 4",
    ]


def test_a_quiet_key_gets_no_summary(clock: Clock, lines: pytest.LogCaptureFixture) -> None:
    limited = limiter(clock)
    limited.info("alice", "one")
    clock.now += 61

    limited.info("alice", "two")

    assert messages(lines) == ["one", "two"]
    assert limited.flush() == 0


def test_keys_are_limited_independently(clock: Clock, lines: pytest.LogCaptureFixture) -> None:
    limited = limiter(clock)

    assert limited.warning("mallory", "from %s", "mallory")
    assert limited.warning("eve", "from %s", "eve")
    assert not limited.warning("mallory", "from %s", "mallory")
    assert not limited.warning("eve", "from %s", "eve")

    assert messages(lines) == ["from mallory", "from eve"]


def test_flush_writes_the_pending_summaries_and_starts_a_new_interval(
    clock: Clock, lines: pytest.LogCaptureFixture
) -> None:
    limited = limiter(clock)
    for _ in range(3):
        limited.error("mallory", "bad")
    clock.now += 5

    assert limited.flush() == 1
    assert limited.flush() == 0  # nothing pending any more
    assert messages(lines) == ["bad", "mallory: …2 more suppressed in the last 5s"]
    assert lines.records[-1].levelno == logging.ERROR
    assert not limited.error("mallory", "bad")  # still within the new interval


def test_the_summary_has_the_highest_level_suppressed(clock: Clock, lines: pytest.LogCaptureFixture) -> None:
    limited = limiter(clock)
    limited.info("k", "first")
    limited.error("k", "worse")
    clock.now += 60
    limited.info("k", "again")

    assert [(record.levelno, record.getMessage()) for record in lines.records] == [
        (logging.INFO, "first"),
        (logging.ERROR, "k: …1 more suppressed in the last 60s"),
        (logging.INFO, "again"),
    ]


def test_memory_is_bounded_by_max_keys_and_an_evicted_key_says_what_it_suppressed(
    clock: Clock, lines: pytest.LogCaptureFixture
) -> None:
    limited = limiter(clock, max_keys=2)
    limited.warning("a", "a1")
    limited.warning("a", "a2")  # suppressed
    limited.warning("b", "b1")

    limited.warning("c", "c1")  # "a", the oldest, goes: its summary first

    assert messages(lines) == ["a1", "b1", "a: …1 more suppressed in the last 0s", "c1"]
    assert limited.warning("a", "a3")  # forgotten, so logged again


@pytest.mark.parametrize(("interval", "max_keys"), [(0, 10), (-1, 10), (1, 0)])
def test_nonsense_limits_are_refused(interval: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(logging.getLogger("x"), interval, max_keys=max_keys)
