"""workers.gate: the cluster-wide per-host gate in a real Redis, shared by several HostGate instances ("workers")."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from arq.connections import ArqRedis

from crawlq import keys
from crawlq.jobs import Deferral, Entry
from crawlq.settings import HostRule, Settings
from crawlq.urls import host_of
from workers.engine import Engine
from workers.fetcher import Fetcher
from workers.gate import GateOutcome, Grant, HostGate, host_limits
from workers.robots import RobotsCache

pytestmark = pytest.mark.timeout(20)


@asynccontextmanager
async def gates(redis: ArqRedis, settings: Settings, count: int) -> AsyncIterator[list[HostGate]]:
    started = [HostGate(redis, settings, f"worker-{i}") for i in range(count)]
    for gate in started:
        gate.start()
    try:
        yield started
    finally:
        for gate in started:
            await gate.close()


async def take(gate: HostGate, host: str, limit: int, delay_s: float = 0.0) -> str:
    """Wait until granted (what the engine does, without a deadline)."""
    grant = await gate.acquire(host, limit, delay_s)
    assert grant.lease is not None
    return grant.lease


async def denied(gate: HostGate, host: str, limit: int = 5) -> Grant:
    """Ask with a deadline of now: the gate answers after one Redis call with the host's known wait."""
    grant = await gate.acquire(host, limit, 0.0, time.monotonic())
    assert grant.lease is None, "expected the host to be closed"
    return grant


async def test_limit_holds_across_gates_and_hosts_are_independent(redis: ArqRedis, settings: Settings) -> None:
    in_flight: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    overall = {"now": 0, "peak": 0}

    async def request(gate: HostGate, host: str, limit: int) -> None:
        lease = await take(gate, host, limit)
        in_flight[host] += 1
        overall["now"] += 1
        peak[host] = max(peak[host], in_flight[host])
        overall["peak"] = max(overall["peak"], overall["now"])
        await asyncio.sleep(0.02)
        in_flight[host] -= 1
        overall["now"] -= 1
        gate.release(host, lease, GateOutcome.OK)

    async with gates(redis, settings, 3) as workers:
        jobs = [request(workers[i % 3], "a.test", 3) for i in range(45)]
        jobs += [request(workers[i % 3], "b.test", 1) for i in range(12)]
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=15)
    assert peak == {"a.test": 3, "b.test": 1}
    assert overall["peak"] == 4  # a busy host does not hold back another one
    assert await redis.zcard(keys.host_leases("a.test")) == 0  # every lease was given back


async def test_delay_between_grants(redis: ArqRedis, settings: Settings) -> None:
    granted_at: list[float] = []

    async def request(gate: HostGate) -> None:
        lease = await take(gate, "slow.test", 5, 0.1)
        granted_at.append(time.monotonic())
        await asyncio.sleep(0.01)
        gate.release("slow.test", lease, GateOutcome.OK)

    async with gates(redis, settings, 2) as workers:
        await asyncio.wait_for(asyncio.gather(*(request(workers[i % 2]) for i in range(10))), timeout=10)
    granted_at.sort()
    gaps = [b - a for a, b in zip(granted_at, granted_at[1:], strict=False)]
    assert min(gaps) >= 0.1 - 0.01, gaps
    assert granted_at[-1] - granted_at[0] < 9 * 0.1 + 0.6  # and not much slower than the delay allows


async def test_lease_of_a_dead_worker_expires(redis: ArqRedis, settings: Settings) -> None:
    short = settings.model_copy(update={"fetch_timeout_s": 0.5})  # leases live fetch_timeout_s + 5 s
    async with gates(redis, short, 2) as (doomed, survivor):
        await take(doomed, "d.test", 2)
        await take(doomed, "d.test", 2)
        died_at = time.monotonic()  # the worker dies here: its two leases are never released
        await denied(survivor, "d.test", 2)
        await asyncio.sleep(3.0)
        await denied(survivor, "d.test", 2)
        await asyncio.wait_for(take(survivor, "d.test", 2), timeout=5)
        freed_after = time.monotonic() - died_at
    assert 5.0 <= freed_after <= 6.5, freed_after


async def test_throttle_starts_a_shared_cooldown_that_doubles_then_eases(redis: ArqRedis, settings: Settings) -> None:
    base = 0.1
    tuned = settings.model_copy(update={"cooldown_base_s": base, "cooldown_max_s": 5.0})
    async with gates(redis, tuned, 2) as (first, second):

        async def throttle_once() -> float:
            lease = await take(first, "t.test", 5)
            first.release("t.test", lease, GateOutcome.THROTTLE)
            return (await denied(second, "t.test")).wait_s  # the other worker sees the cooldown

        waits = []
        for _ in range(3):
            wait_s = await throttle_once()
            waits.append(wait_s)
            await asyncio.sleep(wait_s + 0.02)
        assert waits == pytest.approx([base, 2 * base, 4 * base], abs=0.03)
        for _ in range(6):  # successes halve the penalty until it is gone
            first.release("t.test", await take(first, "t.test", 5), GateOutcome.OK)
        assert await throttle_once() == pytest.approx(base, abs=0.03)


async def test_throttles_within_one_cooldown_count_once(redis: ArqRedis, settings: Settings) -> None:
    tuned = settings.model_copy(update={"cooldown_base_s": 0.2, "cooldown_max_s": 5.0})
    async with gates(redis, tuned, 1) as (gate,):
        leases = [await take(gate, "m.test", 5) for _ in range(3)]
        for lease in leases:
            gate.release("m.test", lease, GateOutcome.THROTTLE)
        assert (await denied(gate, "m.test")).wait_s == pytest.approx(0.2, abs=0.03)


async def test_retry_after_sets_the_cooldown(redis: ArqRedis, settings: Settings) -> None:
    tuned = settings.model_copy(update={"cooldown_base_s": 0.05, "cooldown_max_s": 5.0})
    async with gates(redis, tuned, 2) as (first, second):
        first.release("r.test", await take(first, "r.test", 5), GateOutcome.THROTTLE, retry_after_s=0.6)
        started = time.monotonic()
        assert (await denied(second, "r.test")).wait_s == pytest.approx(0.6, abs=0.05)
        await asyncio.sleep(0.45)
        await denied(second, "r.test")
        await take(second, "r.test", 5)
        assert time.monotonic() - started >= 0.55


async def test_retry_after_longer_than_cooldown_max_is_still_honoured(redis: ArqRedis, settings: Settings) -> None:
    """README: the cooldown is "at least the server's Retry-After"; settings: "a Retry-After may be longer" than
    cooldown_max_s. Only retry_after_max_s caps it."""
    tuned = settings.model_copy(update={"cooldown_base_s": 0.05, "cooldown_max_s": 0.2, "retry_after_max_s": 60.0})
    async with gates(redis, tuned, 2) as (first, second):
        first.release("long.test", await take(first, "long.test", 5), GateOutcome.THROTTLE, retry_after_s=0.8)
        assert (await denied(second, "long.test")).wait_s >= 0.75


def test_host_limits_rules_and_crawl_delay(settings: Settings) -> None:
    tuned = settings.model_copy(
        update={
            "per_host_concurrency": 2,
            "per_host_delay_s": 0.0,
            "robots_max_crawl_delay_s": 5.0,
            "host_rules": [
                HostRule(pattern="*.example.com", concurrency=8, delay_s=0.5),
                HostRule(pattern="127.0.0.2", concurrency=20),
            ],
        }
    )
    assert host_limits(tuned, "other.test") == (2, 0.0)
    assert host_limits(tuned, "www.example.com") == (8, 0.5)
    assert host_limits(tuned, "127.0.0.2:8080") == (20, 0.0)  # a pattern on the bare host matches any port
    assert host_limits(tuned, "other.test", crawl_delay_s=2.0) == (2, 2.0)
    assert host_limits(tuned, "other.test", crawl_delay_s=3600.0) == (2, 5.0)  # capped
    assert host_limits(tuned, "www.example.com", crawl_delay_s=0.1) == (8, 0.5)  # never lowers a rule


async def test_hostile_retry_after_does_not_break_the_engine(redis: ArqRedis, settings: Settings) -> None:
    """A 429 whose Retry-After parses to inf must end as a capped retry, and give its lease back."""

    async def throttled(_: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "1" + "0" * 400})

    app = web.Application()
    app.router.add_get("/", throttled)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/"
    tuned = settings.model_copy(update={"retry_after_max_s": 7.0, "robots_enabled": False})
    fetcher = Fetcher(tuned)
    await fetcher.start()
    async with gates(redis, tuned, 1) as (gate,):
        engine = Engine(tuned, fetcher, gate, RobotsCache(redis, tuned, fetcher))
        try:
            outcome = await asyncio.wait_for(engine.process(Entry("id", url), time.monotonic() + 10), timeout=10)
        finally:
            await fetcher.close()
            await runner.cleanup()
        assert isinstance(outcome, Deferral)
        assert outcome.entries[0].attempts == 1
        assert outcome.run_at_ms - time.time() * 1000 == pytest.approx(7000, abs=500)
        await asyncio.sleep(0.1)
        assert await redis.zcard(keys.host_leases(host_of(url))) == 0


async def test_waiting_for_a_full_host_sends_no_redis_commands(redis: ArqRedis, settings: Settings) -> None:
    """A URL waiting for a host that another worker fills is silent, and is woken by the release at once."""
    async with gates(redis, settings, 2) as (holder, waiter):
        lease = await take(holder, "full.test", 1)
        waiting = asyncio.create_task(waiter.acquire("full.test", 1, 0.0))
        await asyncio.sleep(0.3)  # the waiter asked once and parked
        calls = waiter.calls
        before = int((await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))
        await asyncio.sleep(1.0)
        after = int((await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))
        assert not waiting.done()
        assert waiter.calls == calls and after == before, "a waiting URL made gate calls"
        released_at = time.monotonic()
        holder.release("full.test", lease, GateOutcome.OK)
        grant = await asyncio.wait_for(waiting, timeout=2)
        assert grant.lease is not None
        assert time.monotonic() - released_at < 0.5  # woken by the release, not by a poll


def _scanned(gate: HostGate, host: str) -> int:
    """The waiters of `host` whose future is not done, counted by a scan of the queue."""
    return sum(1 for waiter in gate._hosts[host].waiters if not waiter.future.done())


async def test_the_count_of_waiting_urls_follows_grants_cancels_and_deadlines(
    redis: ArqRedis, settings: Settings
) -> None:
    """`stalled()` and the lease asks read a kept count of a host's waiting URLs, not a scan: it must stay
    equal to the scan whichever way a wait ends (granted, cancelled, its deadline passed)."""
    async with gates(redis, settings, 1) as (gate,):
        leases = [await take(gate, "count.test", 2) for _ in range(2)]
        forever = [asyncio.create_task(gate.acquire("count.test", 2, 0.0)) for _ in range(6)]
        soon = [asyncio.create_task(gate.acquire("count.test", 2, 0.0, time.monotonic() + 0.3)) for _ in range(3)]
        await asyncio.sleep(0.1)
        state = gate._hosts["count.test"]
        assert state.live_waiters() == _scanned(gate, "count.test") == 9
        forever[1].cancel()
        forever[4].cancel()
        await asyncio.gather(forever[1], forever[4], return_exceptions=True)
        assert state.live_waiters() == _scanned(gate, "count.test") == 7
        expired = await asyncio.wait_for(asyncio.gather(*soon), timeout=3)  # the sweep lets them go
        assert all(grant.lease is None for grant in expired)
        assert state.live_waiters() == _scanned(gate, "count.test") == 4
        for lease in leases:
            gate.release("count.test", lease, GateOutcome.OK)  # each goes to the first live waiter
        granted = await asyncio.wait_for(asyncio.gather(forever[0], forever[2]), timeout=2)
        assert [grant.lease for grant in granted] == leases
        assert state.live_waiters() == _scanned(gate, "count.test") == 2
        gate.abandon_waiters()
        await asyncio.gather(forever[3], forever[5])
        assert state.live_waiters() == _scanned(gate, "count.test") == 0


async def test_a_freed_lease_goes_to_a_local_waiter_without_redis(redis: ArqRedis, settings: Settings) -> None:
    async with gates(redis, settings, 1) as (gate,):
        lease = await take(gate, "local.test", 1)
        waiting = asyncio.create_task(gate.acquire("local.test", 1, 0.0))
        await asyncio.sleep(0.2)
        calls = gate.calls
        released_at = time.monotonic()
        gate.release("local.test", lease, GateOutcome.OK)
        grant = await asyncio.wait_for(waiting, timeout=2)
        assert grant.lease == lease and gate.calls == calls
        assert time.monotonic() - released_at < 0.005


async def test_a_lease_freed_while_other_hosts_wait_for_room_goes_back_at_once(
    redis: ArqRedis, settings: Settings
) -> None:
    """A worker holding its `concurrency` leases, with URLs of other hosts waiting for room: a freed lease
    that no URL of its own host wants goes back to Redis now, and a waiting host gets it, instead of it
    sitting idle for `HOLD_S` while the waiting URLs (and the fetch slots they could use) stall."""
    small = settings.model_copy(update={"concurrency": 2})
    async with gates(redis, small, 1) as (gate,):
        held = [await take(gate, f"busy{n}.test", 2) for n in range(2)]  # the worker's whole room
        waiting = asyncio.create_task(gate.acquire("next.test", 2, 0.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        released_at = time.monotonic()
        gate.release("busy0.test", held[0], GateOutcome.OK)
        grant = await asyncio.wait_for(waiting, timeout=2)
        assert grant.lease is not None
        assert time.monotonic() - released_at < 0.5  # not after HOLD_S (2 s) or the sweep
        gate.release("busy1.test", held[1], GateOutcome.OK)
        gate.release("next.test", grant.lease, GateOutcome.OK)


async def test_a_success_outside_a_cooldown_costs_no_penalty_read(redis: ArqRedis, settings: Settings) -> None:
    """A lease given back after a success, on a host that is not recovering from a cooldown, goes to Redis
    as a plain release: gate.lua reads no penalty for it (one HMGET less per release)."""

    async def hmgets() -> int:
        return int((await redis.info("commandstats")).get("cmdstat_hmget", {}).get("calls", 0))

    async with gates(redis, settings, 2) as (gate, other):
        lease = await take(gate, "plain.test", 1)
        waiting = asyncio.create_task(other.acquire("plain.test", 1, 0.0))  # contended: the lease goes back
        await asyncio.sleep(0.2)
        before = await hmgets()
        gate.release("plain.test", lease, GateOutcome.OK)
        grant = await asyncio.wait_for(waiting, timeout=2)
        assert grant.lease is not None
        assert await hmgets() - before == 1  # the waiter's grant reads the host's cooldown; the release nothing
        other.release("plain.test", grant.lease, GateOutcome.OK)


async def test_a_freed_lease_goes_to_the_waiter_of_the_highest_priority(redis: ArqRedis, settings: Settings) -> None:
    """URLs of a higher-priority batch waiting for a host get its freed leases before earlier URLs of a lower
    one; within one priority, first come, first served."""
    async with gates(redis, settings, 1) as (gate,):
        lease = await take(gate, "ranked.test", 1)
        order: list[str] = []

        async def wait(name: str, priority: float) -> None:
            grant = await gate.acquire("ranked.test", 1, 0.0, None, priority)
            order.append(name)
            gate.release("ranked.test", grant.lease or "", GateOutcome.OK)

        waiting = [asyncio.create_task(wait("low-1", 0))]
        await asyncio.sleep(0.05)
        waiting += [asyncio.create_task(wait("high-1", 5)), asyncio.create_task(wait("low-2", 0))]
        await asyncio.sleep(0.05)
        waiting.append(asyncio.create_task(wait("high-2", 5)))
        await asyncio.sleep(0.05)
        gate.release("ranked.test", lease, GateOutcome.OK)
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
        assert order == ["high-1", "high-2", "low-1", "low-2"]


async def test_a_full_worker_frees_room_for_a_waiter_of_higher_priority_on_another_host(
    redis: ArqRedis, settings: Settings
) -> None:
    """A worker whose room is full of one host's leases, with more of that host's low-priority URLs waiting:
    a freed lease goes back (not to the next low-priority URL) when a higher-priority URL waits for another
    host, which then gets a lease at once instead of after every low-priority URL."""
    small = settings.model_copy(update={"concurrency": 2})
    async with gates(redis, small, 1) as (gate,):
        held = [await take(gate, "low.test", 2) for _ in range(2)]
        low_waiting = asyncio.create_task(gate.acquire("low.test", 2, 0.0, None, 0))
        high_waiting = asyncio.create_task(gate.acquire("high.test", 2, 0.0, None, 5))
        await asyncio.sleep(0.1)
        gate.release("low.test", held[0], GateOutcome.OK)
        grant = await asyncio.wait_for(high_waiting, timeout=2)
        assert grant.lease is not None and not low_waiting.done()
        gate.release("high.test", grant.lease, GateOutcome.OK)
        gate.release("low.test", held[1], GateOutcome.OK)
        low = await asyncio.wait_for(low_waiting, timeout=2)
        gate.release("low.test", low.lease or "", GateOutcome.OK)


async def test_a_full_redis_refusing_a_gate_call_is_one_line_and_the_call_is_retried(
    redis: ArqRedis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An OOM reply to the gate's script (a full Redis) is logged once, without a traceback, and the lease is
    asked for again until Redis has room."""
    from redis.exceptions import OutOfMemoryError

    async with gates(redis, settings, 1) as (gate,):
        script, refusals = gate._script, [2]

        async def full_then_room(**kwargs: object) -> object:
            if refusals[0] > 0:
                refusals[0] -= 1
                raise OutOfMemoryError(
                    "command not allowed when used memory > 'maxmemory'. script: on @user_script:104."
                )
            return await script(**kwargs)

        gate._script = full_then_room  # type: ignore[assignment]
        with caplog.at_level(logging.WARNING, logger="crawlq.gate"):
            lease = await asyncio.wait_for(take(gate, "full-redis.test", 1), timeout=5)
        gate.release("full-redis.test", lease, GateOutcome.OK)
        records = [record for record in caplog.records if record.name == "crawlq.gate"]
        assert [record.getMessage() for record in records] == [
            "host gate: Redis is out of memory; leases are asked for again until it has room"
        ]
        assert all(record.exc_info is None for record in records)


async def test_workers_at_their_share_of_a_host_keep_reusing_their_leases(redis: ArqRedis, settings: Settings) -> None:
    """Two workers with one lease each of a limit-2 host, both with more URLs waiting: neither tells the other to
    share, so each freed lease goes to the next local URL without Redis, instead of both being handed back
    and forth through Redis with every request."""
    async with gates(redis, settings, 2) as (first, second):
        leases = [await take(first, "shared.test", 2), await take(second, "shared.test", 2)]
        waiting = [asyncio.create_task(gate.acquire("shared.test", 2, 0.0)) for gate in (first, second)]
        await asyncio.sleep(0.3)  # both asked, found the host full, and registered as waiters
        assert not any(task.done() for task in waiting)
        calls = first.calls, second.calls
        first.release("shared.test", leases[0], GateOutcome.OK)
        second.release("shared.test", leases[1], GateOutcome.OK)
        grants = await asyncio.wait_for(asyncio.gather(*waiting), timeout=2)
        assert [grant.lease for grant in grants] == leases  # each worker's own lease, reused here
        assert (first.calls, second.calls) == calls
        first.release("shared.test", leases[0], GateOutcome.OK)
        second.release("shared.test", leases[1], GateOutcome.OK)


async def test_a_worker_without_a_lease_of_a_host_gets_one_from_a_worker_holding_all(
    redis: ArqRedis, settings: Settings
) -> None:
    """One worker holds both leases of a limit-2 host and has more URLs waiting; another worker's URL asks
    and holds none: the holder is told to share, so its next freed lease goes back to Redis and to the other."""
    async with gates(redis, settings, 2) as (holder, other):
        held = [await take(holder, "hogged.test", 2) for _ in range(2)]
        more = asyncio.create_task(holder.acquire("hogged.test", 2, 0.0))
        starved = asyncio.create_task(other.acquire("hogged.test", 2, 0.0))
        await asyncio.sleep(0.3)
        holder.release("hogged.test", held[0], GateOutcome.OK)
        grant = await asyncio.wait_for(starved, timeout=2)
        assert grant.lease is not None and not more.done()
        holder.release("hogged.test", held[1], GateOutcome.OK)
        other.release("hogged.test", grant.lease, GateOutcome.OK)
        granted = await asyncio.wait_for(more, timeout=3)
        holder.release("hogged.test", granted.lease or "", GateOutcome.OK)
