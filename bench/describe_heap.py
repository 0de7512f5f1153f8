"""`python -m bench.describe_heap`: what a fragmented malloc heap does to describing a page.

A busy worker describes a 2 KiB page in 60-80 us of CPU (measured in situ: process CPU time around
`Fetcher._describe` in the throughput shape), against ~25 us in a fresh process. Each Lexbor document makes
~140 allocations and frees them again, so malloc's state matters. This reproduces the effect without a
worker: `describe_page` on the bench target's 2 KiB page, timed (best of 3 x 5,000 calls, process CPU
time) in a fresh process, then again after 200,000 blocks of 20-6,000 bytes were allocated and every other
one freed (a fragmented heap). Prints one JSON line of microseconds per page.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from crawlq_local.target import _PAGE_2K
from workers.content import describe_page, keep_heap_pad

__all__ = ["main"]

HEADERS = {"Content-Type": "text/html; charset=utf-8"}
CALLS = 5_000
BLOCKS = 200_000


def _describe() -> None:
    describe_page(_PAGE_2K, HEADERS, "utf-8", 300, None)


def best_us(call: Callable[[], None], calls: int = CALLS) -> float:
    """The best of three timings of `calls` calls, in process CPU microseconds per call."""
    for _ in range(500):
        call()
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return round(best, 1)


def main() -> None:
    keep_heap_pad()  # as a worker does
    figures = {"fresh_us": best_us(_describe)}
    rng = random.Random(1)
    blocks: list[bytes | bytearray] = []
    for number in range(BLOCKS):
        blocks.append(bytes(rng.randint(600, 6000)))
        if number % 3 == 0:
            blocks.append(bytearray(rng.randint(20, 500)))
    rng.shuffle(blocks)
    del blocks[::2]
    figures["fragmented_us"] = best_us(_describe)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
