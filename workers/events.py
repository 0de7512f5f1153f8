"""A small asyncio helper shared by the worker's loops."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait for `event` at most `timeout_s` seconds (None: no limit); whether it was set."""
    if timeout_s is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
