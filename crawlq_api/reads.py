"""Reads under a deadline: several sources read concurrently; those that fail or stall are named, not awaited.

This is the tutorial's deadline-and-degradation pattern: an answer is built from what arrived in time,
with `partial_failure` set when a source is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Gathered", "gather_within"]

logger = logging.getLogger("crawlq.api")


@dataclass(slots=True)
class Gathered:
    values: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  #: sources that raised or missed the deadline
    errors: dict[str, BaseException] = field(default_factory=dict)  #: what the failed sources raised

    @property
    def partial_failure(self) -> bool:
        return bool(self.failed)


async def gather_within(deadline_s: float, sources: dict[str, Awaitable[Any]]) -> Gathered:
    """Run every source at once; after `deadline_s` cancel the rest. Never raises for a source's failure."""
    tasks = {name: asyncio.ensure_future(source) for name, source in sources.items()}
    if not tasks:
        return Gathered()
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
    for task in pending:
        task.cancel()
    gathered = Gathered()
    for name, task in tasks.items():
        if task in done and not task.cancelled() and task.exception() is None:
            gathered.values[name] = task.result()
            continue
        gathered.failed.append(name)
        error = task.exception() if task in done and not task.cancelled() else None
        if error is not None:
            gathered.errors[name] = error
            logger.warning("source %s failed: %s", name, type(error).__name__)
    return gathered
