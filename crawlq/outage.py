"""Riding out a Redis outage within `redis_retry_window_s`: one line when it starts, one when it ends.

`Outage` is one process's view of an outage (since when, reported or not); `WindowRetry` is redis-py's
`Retry` bounded by that window in wall time, not by a count of attempts, so a command in a worker
retries until Redis answers or the window that began with the *first* failure is over. Workers,
`crawlq wait` and `crawlq status --watch` all give up after the same window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from crawlq.errors import RedisUnavailable

__all__ = ["LOST_CONNECTION", "REDIS_DOWN", "Outage", "WindowRetry", "retry_checkouts"]

T = TypeVar("T")
REDIS_DOWN: tuple[type[RedisError], ...] = (ConnectionError, TimeoutError)  #: what counts as "unreachable"
LOST_CONNECTION: tuple[type[BaseException], ...] = (*REDIS_DOWN, OSError)  #: the same, as a socket may say it
logger = logging.getLogger("crawlq")


class Outage:
    """When Redis stopped answering (None while it answers), reported through `report` once per outage.

    An outage is reported from its second failure on: one failure that the next try mends is a dropped
    connection (a proxy, a failover, `CLIENT KILL`), not an outage, and a flaky link would otherwise log
    two lines per dropped connection. The report still names the time of the first failure.

    :param report: takes one line; the start ("Redis at X unreachable since T, retrying") and the end.
    """

    def __init__(self, where: str, window_s: float, report: Callable[[str], None] | None = None) -> None:
        self.where = where
        self.window_s = window_s
        self.report = report or logger.warning
        self.since: float | None = None  #: monotonic time of the first failure of this outage
        self._since_wall = 0.0
        self._failures = 0  #: failures in this outage

    def failed(self, exc: BaseException) -> None:
        """A command failed for want of Redis: start (and report) an outage, or raise `RedisUnavailable`
        once it has lasted longer than the window."""
        self.start(exc)
        if self.expired():
            raise RedisUnavailable(self.give_up_message()) from exc

    def start(self, exc: BaseException) -> None:
        """Note a failure: the start of an outage, reported (once) at its second failure."""
        if self.since is None:
            self.since, self._since_wall = time.monotonic(), time.time()
        self._failures += 1
        if self._failures == 2:
            stamp = time.strftime("%H:%M:%S", time.localtime(self._since_wall))
            self.report(
                f"Redis at {self.where} unreachable since {stamp} ({type(exc).__name__}), retrying for up to "
                f"{self.window_s:g} s"
            )

    def expired(self) -> bool:
        return self.since is not None and time.monotonic() - self.since > self.window_s

    def down_s(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def recovered(self) -> None:
        if self.since is not None:
            if self._failures >= 2:
                self.report(f"Redis at {self.where} is back after {self.down_s():.1f} s")
            self.since, self._failures = None, 0

    def give_up_message(self) -> str:
        return (
            f"Redis at {self.where} unreachable for {self.down_s():.0f} s, longer than "
            f"CRAWLQ_REDIS_RETRY_WINDOW_S ({self.window_s:g} s); giving up"
        )


class WindowRetry(Retry):
    """redis-py's Retry, retrying connection errors and timeouts until `outage` is over its window.

    Every connection of a client shares this one object (`__deepcopy__` returns it), so the window is the
    process's, counted from the first failure of any command."""

    __slots__ = ("outage",)

    def __init__(self, outage: Outage) -> None:
        super().__init__(ExponentialBackoff(cap=0.5, base=0.05), -1, LOST_CONNECTION)  # type: ignore[arg-type]
        self.outage = outage

    def __deepcopy__(self, memo: dict[int, Any]) -> WindowRetry:
        return self

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]) -> T:
        failures = 0
        while True:
            try:
                reply = await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                self.outage.start(error)
                if self.outage.expired():
                    raise error
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            self.outage.recovered()
            return reply


async def _nothing(error: RedisError) -> None:
    """A failed checkout has already put its connection back in the pool, disconnected."""


def retry_checkouts(client: Redis) -> None:
    """Retry taking a connection from `client`'s pool within its `WindowRetry`, as its commands are.

    redis-py checks a pooled connection out, and greets a new one (HELLO, CLIENT SETINFO), before the
    command's retry begins, so a connection that Redis closed there failed the command at once: with
    connections dropped by a proxy, a failover or `CLIENT KILL`, a worker's job failed and a commit's
    closure was lost. A no-op for a client without a `WindowRetry`."""
    retry = client.get_retry()
    if not isinstance(retry, WindowRetry):
        return
    pool = client.connection_pool
    checkout = pool.get_connection

    async def get_connection(*args: Any, **options: Any) -> AbstractConnection:
        try:
            found: AbstractConnection = await checkout(*args, **options)
            return found
        except LOST_CONNECTION as error:
            retry.outage.start(error)  # the first failure; the retry below counts the rest
        connection: AbstractConnection = await retry.call_with_retry(lambda: checkout(*args, **options), _nothing)
        return connection

    pool.get_connection = get_connection
