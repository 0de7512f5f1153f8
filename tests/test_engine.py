"""workers/engine.py: `Engine.process` outcomes against the local target site and the suite's Redis server: a
result, a robots.txt refusal, hand-backs (deadline, halted batch, draining), the retry decision, and what it
gives back to the host gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from crawlq.jobs import Deferral
from crawlq.models import ErrorClass, UrlResult, now_ms
from crawlq.settings import Settings
from crawlq_local.target import ThreadedTargetSite
from tests import factories
from workers.engine import Engine
from workers.fetcher import Attempt, Fetcher
from workers.gate import GateOutcome, HostGate
from workers.robots import RobotsCache

LATER_S = 30.0  #: a deadline far enough away for one fetch


class RecordingGate(HostGate):
    """The real gate, recording what each fetch gave back."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.released: list[tuple[str, GateOutcome, float | None]] = []

    def release(
        self, host: str, lease: str, outcome: GateOutcome = GateOutcome.OTHER, retry_after_s: float | None = None
    ) -> None:
        self.released.append((host, outcome, retry_after_s))
        super().release(host, lease, outcome, retry_after_s)


@pytest.fixture
def robots_site() -> Iterator[ThreadedTargetSite]:
    with ThreadedTargetSite(robots_txt="User-agent: *\nDisallow: /page/\n") as running:
        yield running


async def make_engine(redis: ArqRedis, settings: Settings) -> tuple[Engine, RecordingGate]:
    fetcher = Fetcher(settings)
    await fetcher.start()
    gate = RecordingGate(redis, settings, "test-worker")
    gate.start()
    return Engine(settings, fetcher, gate, RobotsCache(redis, settings, fetcher, gate)), gate


@pytest.fixture
async def engine(redis: ArqRedis, settings: Settings) -> AsyncIterator[tuple[Engine, RecordingGate]]:
    built, gate = await make_engine(redis, settings)
    yield built, gate
    await gate.close()
    await built.fetcher.close()


def deadline() -> float:
    return time.monotonic() + LATER_S


async def test_a_page_becomes_a_result_and_its_lease_goes_back_ok(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite
) -> None:
    run, gate = engine
    outcome = await run.process(factories.entry(site.url("/ok")), deadline())
    assert isinstance(outcome, UrlResult)
    assert outcome.ok and outcome.status == 200 and outcome.attempts == 1 and outcome.error is None
    assert gate.released == [(f"{site.host}:{site.port}", GateOutcome.OK, None)]
    assert (run.fetches, run.in_flight) == (1, 0)


async def test_robots_txt_refuses_a_url_without_fetching_it(
    redis: ArqRedis, settings: Settings, robots_site: ThreadedTargetSite
) -> None:
    run, gate = await make_engine(redis, settings.replace(robots_enabled=True))
    try:
        refused = await run.process(factories.entry(robots_site.url("/page/1"), attempts=2), deadline())
        allowed = await run.process(factories.entry(robots_site.url("/ok")), deadline())
    finally:
        await gate.close()
        await run.fetcher.close()
    assert isinstance(refused, UrlResult) and refused.error is ErrorClass.ROBOTS_DISALLOWED
    assert not refused.ok and refused.attempts == 2 and refused.status is None
    assert isinstance(allowed, UrlResult) and allowed.ok
    assert robots_site.stats.hits["/page/1"] == 0 and robots_site.stats.hits["/robots.txt"] == 1


@pytest.mark.parametrize("why", ["deadline", "halted", "draining"])
async def test_a_url_is_handed_back_unchanged_before_its_fetch(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite, why: str
) -> None:
    run, gate = engine
    entry = factories.entry(site.url("/ok"), attempts=1)
    until = time.monotonic() - 1 if why == "deadline" else deadline()
    if why == "halted":
        run.halted = lambda batch: batch == "b1"
    if why == "draining":
        run.draining.set()
    before = now_ms()
    outcome = await run.process(entry, until, batch="b1")
    assert isinstance(outcome, Deferral)
    assert outcome.entries == [entry] and before <= outcome.run_at_ms <= now_ms()
    assert gate.released == [] and run.fetches == 0


async def test_a_transient_failure_is_retried_later_with_one_more_attempt(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite
) -> None:
    run, gate = engine
    entry = factories.entry(site.url("/status/500"))
    before = now_ms()
    outcome = await run.process(entry, deadline())
    assert isinstance(outcome, Deferral)
    [retry] = outcome.entries
    assert (retry.url_id, retry.url, retry.attempts) == (entry.url_id, entry.url, 1)
    assert outcome.run_at_ms >= before
    assert [released[1] for released in gate.released] == [GateOutcome.OTHER]


async def test_the_last_attempt_and_a_final_status_are_results(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite
) -> None:
    run, _ = engine
    last = await run.process(factories.entry(site.url("/status/500"), attempts=2), deadline())  # max_attempts 3
    final = await run.process(factories.entry(site.url("/status/404")), deadline())
    assert isinstance(last, UrlResult) and (last.status, last.attempts, last.error) == (
        500,
        3,
        ErrorClass.HTTP_STATUS,
    )
    assert isinstance(final, UrlResult) and (final.status, final.attempts) == (404, 1) and not final.ok


async def test_a_throttle_goes_back_to_the_gate_with_its_retry_after(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite
) -> None:
    run, gate = engine
    outcome = await run.process(factories.entry(site.url("/retry-after/k?after=1")), deadline())
    assert isinstance(outcome, Deferral) and outcome.entries[0].attempts == 1
    assert gate.released == [(f"{site.host}:{site.port}", GateOutcome.THROTTLE, 1.0)]


async def test_a_page_is_described_after_its_fetch_slot_and_lease_went_back(
    engine: tuple[Engine, RecordingGate], site: ThreadedTargetSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Describing a page is not fetching it: while a fetched page waits to be described (in a batch, or
    in the thread that parses a large page), its fetch slot and its host lease are free for the next URL,
    and the claim loop counts it among the URLs no fetch slot could serve. Its `fetched_at` is when its
    fetch ended, not when its description did. With nothing else in flight, its batch starts at once."""
    run, gate = engine
    seen: list[tuple[int, int, int, bool, bool]] = []
    finish = run.fetcher.finish
    waited_from: list[int] = []

    async def watched(attempt: Attempt, urgent: bool = True) -> Attempt:
        described = attempt.undescribed is not None and attempt.content is None
        seen.append((len(gate.released), run.slots._value, run.describing, described, urgent))
        waited_from.append(now_ms())
        await asyncio.sleep(0.05)  # a long wait for its batch
        return await finish(attempt, urgent)

    monkeypatch.setattr(run.fetcher, "finish", watched)
    outcome = await run.process(factories.entry(site.url("/page/1")), deadline())
    assert isinstance(outcome, UrlResult) and outcome.ok
    assert outcome.content is not None and outcome.content.title  # described after all
    assert seen == [(1, run.settings.concurrency, 1, True, True)]  # urgent: nothing else was in flight
    assert run.describing == 0
    assert outcome.fetched_at <= waited_from[0]
