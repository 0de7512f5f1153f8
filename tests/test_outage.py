"""`crawlq.outage.Outage`: what an outage reports, and when (logic only; the fault tests run real outages)."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError

from crawlq.errors import RedisUnavailable
from crawlq.outage import Outage


def test_one_failure_the_next_try_mends_is_a_dropped_connection_and_says_nothing() -> None:
    lines: list[str] = []
    outage = Outage("redis://x:1/0", 30, lines.append)
    for _ in range(3):
        outage.start(ConnectionError("Connection closed by server."))
        outage.recovered()
    assert lines == []
    assert outage.since is None


def test_an_outage_is_reported_once_from_its_second_failure_with_the_first_failures_time() -> None:
    lines: list[str] = []
    outage = Outage("redis://x:1/0", 30, lines.append)
    outage.start(ConnectionError("refused"))
    first = time.strftime("%H:%M:%S")
    assert lines == []
    for _ in range(4):
        outage.failed(ConnectionError("refused"))
    assert len(lines) == 1
    assert lines[0].startswith("Redis at redis://x:1/0 unreachable since ") and "retrying for up to 30 s" in lines[0]
    assert first in lines[0] or time.strftime("%H:%M:%S") in lines[0]
    outage.recovered()
    assert len(lines) == 2 and lines[1].startswith("Redis at redis://x:1/0 is back after ")
    outage.start(ConnectionError("refused"))
    outage.recovered()
    assert len(lines) == 2  # the count starts again after a recovery


def test_past_the_window_a_failure_raises_with_one_sentence() -> None:
    outage = Outage("redis://x:1/0", 0.05, lambda line: None)
    outage.failed(ConnectionError("refused"))
    time.sleep(0.06)
    with pytest.raises(RedisUnavailable, match="longer than CRAWLQ_REDIS_RETRY_WINDOW_S"):
        outage.failed(ConnectionError("refused"))
