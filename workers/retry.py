"""The retry policy, as one pure decision: given an attempt's outcome, retry (and when) or stop.

Retryable: timeouts, connection errors, DNS failures, truncated bodies and the statuses 408, 425, 429,
500, 502, 503, 504. Everything else is final at once: a body that cannot be decoded (`decode`) or a reply
that is not HTTP (`protocol`) would fail the same way again. The delay is exponential backoff with full jitter,
`U(0, min(backoff_max_s, backoff_base_s * 2**(attempt-1)))`, raised to the server's Retry-After
(seconds or HTTP-date) when it sends one, capped at `retry_after_max_s`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from crawlq.models import ErrorClass
from crawlq.settings import Settings

__all__ = ["RETRYABLE_ERRORS", "RETRYABLE_STATUSES", "Decision", "decide", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRYABLE_ERRORS = frozenset({ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.DNS, ErrorClass.TRUNCATED})


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay_s: float = 0.0


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None if absent/invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text) if len(text) <= 12 else math.inf
        return seconds if math.isfinite(seconds) else 1e12
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_s)


def decide(
    *,
    status: int | None,
    error: ErrorClass | None,
    retry_after_s: float | None,
    attempt: int,
    settings: Settings,
    rng: random.Random,
) -> Decision:
    """`attempt` is the number of attempts made so far (1 after the first)."""
    retryable = (error in RETRYABLE_ERRORS) or (error is ErrorClass.HTTP_STATUS and status in RETRYABLE_STATUSES)
    if not retryable or attempt >= settings.max_attempts:
        return Decision(retry=False)
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    delay = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.retry_after_max_s))
    return Decision(retry=True, delay_s=delay)
