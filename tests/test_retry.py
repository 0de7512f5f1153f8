"""workers.retry: the pure retry decision (what is retried, full-jitter backoff, caps) and Retry-After parsing."""

from __future__ import annotations

import email.utils
import math
import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crawlq.models import ErrorClass
from crawlq.settings import Settings
from tests.conftest import make_settings
from workers.retry import Decision, decide, parse_retry_after

pytestmark = pytest.mark.timeout(10)

NOW_S = 1_800_000_000.0


def policy(**overrides: object) -> Settings:
    """Explicit numbers, so neither the environment nor a .env file can change what is tested."""
    values: dict[str, Any] = dict(max_attempts=4, backoff_base_s=0.5, backoff_max_s=8.0, retry_after_max_s=60.0)
    return make_settings(**{**values, **overrides})


def run(
    status: int | None,
    error: ErrorClass | None,
    attempt: int = 1,
    retry_after_s: float | None = None,
    settings: Settings | None = None,
    seed: int = 0,
) -> Decision:
    return decide(
        status=status,
        error=error,
        retry_after_s=retry_after_s,
        attempt=attempt,
        settings=settings or policy(),
        rng=random.Random(seed),
    )


@pytest.mark.parametrize("error", [ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.DNS])
def test_transient_errors_are_retried(error: ErrorClass) -> None:
    assert run(None, error).retry


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(status: int) -> None:
    assert run(status, ErrorClass.HTTP_STATUS).retry


@pytest.mark.parametrize("status", [300, 301, 304, 400, 401, 403, 404, 405, 410, 418, 422, 451, 501, 505])
def test_other_statuses_are_final_at_once(status: int) -> None:
    assert run(status, ErrorClass.HTTP_STATUS) == Decision(retry=False)


@pytest.mark.parametrize(
    "error",
    [
        ErrorClass.REDIRECT_LOOP,
        ErrorClass.BAD_REDIRECT,
        ErrorClass.BLOCKED_ADDRESS,
        ErrorClass.TOO_LARGE,
        ErrorClass.INVALID_URL,
        ErrorClass.TLS,
        ErrorClass.DECODE,
        ErrorClass.ROBOTS_DISALLOWED,
    ],
)
def test_permanent_errors_are_final(error: ErrorClass) -> None:
    assert run(302, error) == Decision(retry=False)
    assert run(None, error) == Decision(retry=False)


def test_success_is_final() -> None:
    assert run(200, None) == Decision(retry=False)


def test_max_attempts_bounds_retries() -> None:
    settings = policy(max_attempts=3)
    assert run(503, ErrorClass.HTTP_STATUS, attempt=1, settings=settings).retry
    assert run(503, ErrorClass.HTTP_STATUS, attempt=2, settings=settings).retry
    assert not run(503, ErrorClass.HTTP_STATUS, attempt=3, settings=settings).retry
    assert not run(None, ErrorClass.TIMEOUT, attempt=7, settings=settings).retry
    assert not run(503, ErrorClass.HTTP_STATUS, attempt=1, settings=policy(max_attempts=1)).retry


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_backoff_is_full_jitter_below_the_exponential_ceiling(attempt: int) -> None:
    settings = policy(max_attempts=10, backoff_base_s=0.5, backoff_max_s=100.0)
    ceiling = 0.5 * 2 ** (attempt - 1)
    delays = [run(None, ErrorClass.CONNECT, attempt, settings=settings, seed=seed).delay_s for seed in range(4000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: uniform over the whole [0, ceiling] range, not "half fixed plus half random"
    assert min(delays) < 0.02 * ceiling
    assert max(delays) > 0.98 * ceiling
    assert statistics.fmean(delays) == pytest.approx(ceiling / 2, rel=0.05)
    below_half = sum(d < ceiling / 2 for d in delays) / len(delays)
    assert below_half == pytest.approx(0.5, abs=0.05)


def test_backoff_ceiling_is_capped() -> None:
    settings = policy(max_attempts=100, backoff_base_s=0.5, backoff_max_s=3.0)
    delays = [run(None, ErrorClass.TIMEOUT, 40, settings=settings, seed=seed).delay_s for seed in range(2000)]
    assert all(0.0 <= d <= 3.0 for d in delays)
    assert max(delays) > 2.9


def test_retry_after_raises_the_delay_and_is_capped() -> None:
    settings = policy(backoff_base_s=0.01, backoff_max_s=0.01, retry_after_max_s=60.0)
    assert run(429, ErrorClass.HTTP_STATUS, retry_after_s=2.0, settings=settings).delay_s == pytest.approx(2.0)
    assert run(503, ErrorClass.HTTP_STATUS, retry_after_s=86_400.0, settings=settings).delay_s == 60.0
    # a Retry-After shorter than the jittered backoff never shortens it
    long_backoff = policy(backoff_base_s=10.0, backoff_max_s=10.0)
    for seed in range(200):
        plain = run(503, ErrorClass.HTTP_STATUS, settings=long_backoff, seed=seed).delay_s
        hinted = run(503, ErrorClass.HTTP_STATUS, retry_after_s=0.001, settings=long_backoff, seed=seed).delay_s
        assert hinted == max(plain, 0.001)


def test_retry_after_does_not_make_a_final_outcome_retryable() -> None:
    assert not run(404, ErrorClass.HTTP_STATUS, retry_after_s=2.0).retry
    assert not run(429, ErrorClass.HTTP_STATUS, attempt=4, retry_after_s=2.0).retry


@pytest.mark.parametrize(("header", "seconds"), [("2", 2.0), ("0", 0.0), (" 120 ", 120.0), ("86400", 86400.0)])
def test_parse_retry_after_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW_S) == seconds


def test_parse_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW_S, tz=UTC) + timedelta(seconds=30)
    assert parse_retry_after(email.utils.format_datetime(when, usegmt=True), NOW_S) == pytest.approx(30.0)
    # the obsolete RFC 850 and asctime forms are valid HTTP-dates too (RFC 9110, section 5.6.7)
    assert parse_retry_after(when.strftime("%A, %d-%b-%y %H:%M:%S GMT"), NOW_S) == pytest.approx(30.0)
    assert parse_retry_after(when.strftime("%a %b %d %H:%M:%S %Y"), NOW_S) == pytest.approx(30.0)
    past = email.utils.format_datetime(when - timedelta(days=1), usegmt=True)
    assert parse_retry_after(past, NOW_S) == 0.0


def test_http_date_retry_after_is_capped_too() -> None:
    far = email.utils.format_datetime(datetime.fromtimestamp(NOW_S, tz=UTC) + timedelta(days=3), usegmt=True)
    parsed = parse_retry_after(far, NOW_S)
    assert parsed == pytest.approx(3 * 86_400)
    decision = run(429, ErrorClass.HTTP_STATUS, retry_after_s=parsed, settings=policy(retry_after_max_s=45.0))
    assert decision.retry and decision.delay_s == 45.0


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "-5", "1.5", "2s", "0x10", "Wed, 31 Feb 2026 10:00:00 GMT", "Fri, 99 Nop 20x"],
)
def test_invalid_retry_after_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header, NOW_S) is None


@pytest.mark.parametrize("header", ["²", "¹⁰", "٣"])
def test_non_ascii_digits_never_raise(header: str) -> None:
    """aiohttp decodes header bytes as UTF-8, so a hostile server controls these characters."""
    parsed = parse_retry_after(header, NOW_S)
    assert parsed is None or (math.isfinite(parsed) and parsed >= 0)


def test_absurdly_long_retry_after_is_finite() -> None:
    """`float('1' + '0' * 400)` is inf; downstream `int(retry_after_s * 1000)` (the gate) then raises."""
    parsed = parse_retry_after("1" + "0" * 400, NOW_S)
    assert parsed is None or math.isfinite(parsed)
