"""The URLs a run fetches: distinct /fast pages, /delay pages with seeded delays, and the ideal times."""

from __future__ import annotations

import heapq
import os
import random
from pathlib import Path

__all__ = ["delay_urls", "delays_ms", "fast_urls", "greedy_makespan_s", "run_tag", "write_lines"]

DELAY_SEED = 42  #: the seed of peer-baselines' latency table


def run_tag() -> str:
    """A nonce put in every URL of a run, so no two runs (or batches) share a URL."""
    return os.urandom(4).hex()


def fast_urls(base: str, count: int, tag: str) -> list[str]:
    return [f"{base}/fast?r={tag}&i={number}" for number in range(count)]


def delays_ms(count: int, seed: int = DELAY_SEED, low: int = 50, high: int = 150) -> list[int]:
    """`count` delays drawn uniformly from [low, high] ms with a fixed seed."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def delay_urls(base: str, delays: list[int], tag: str) -> list[str]:
    return [f"{base}/delay?ms={ms}&r={tag}&i={number}" for number, ms in enumerate(delays)]


def greedy_makespan_s(delays: list[int], slots: int) -> float:
    """The wall time of a zero-overhead schedule that starts each delay, in order, on the first free slot."""
    free_at = [0.0] * min(slots, max(1, len(delays)))
    for ms in delays:
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + ms / 1000)
    return max(free_at)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
