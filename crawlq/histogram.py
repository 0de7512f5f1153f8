"""Log-bucketed latency histogram: mergeable (bucket counts add up) with bounded relative error.

A latency `v` ms falls in bucket `i = ceil(log(v) / log(GAMMA))`; the bucket is reported as
`2 * GAMMA**i / (GAMMA + 1)`, which is within `(GAMMA - 1) / (GAMMA + 1)` (2 %) of every value in it.
Buckets are stored as `h:<i>` fields of a Redis hash and incremented with HINCRBY, so any number of
workers can add to one histogram and percentiles never need the raw samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["GAMMA", "MAX_RELATIVE_ERROR", "bucket_of", "bucket_value", "percentiles"]

GAMMA = 1.04
MAX_RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
_LOG_GAMMA = math.log(GAMMA)
_MIN_MS = 0.001


def bucket_of(latency_ms: float) -> int:
    return math.ceil(math.log(max(latency_ms, _MIN_MS)) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    return 2 * GAMMA**bucket / (GAMMA + 1)


def percentiles(counts: Mapping[int, int], quantiles: Iterable[float]) -> list[float | None]:
    """The value at each quantile (0..1) of a histogram given as bucket -> count; None when empty."""
    total = sum(counts.values())
    ordered = sorted((bucket, n) for bucket, n in counts.items() if n > 0)
    out: list[float | None] = []
    for q in quantiles:
        if total == 0:
            out.append(None)
            continue
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out.append(bucket_value(bucket))
                break
    return out
