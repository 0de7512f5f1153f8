"""Cancel, pause and resume under races: running jobs, retries, a SIGKILLed worker (real workers, real Redis)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from crawlq import keys
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import Workers, assert_exactly_once, fault_env, submit, sync_redis, wait_complete, write_urls
from tests.helpers import run_cli, wait_until


def mixed_urls(site: ThreadedTargetSite, n: int) -> list[str]:
    """Slow pages, pages that fail once with a 500 (a retry), and fast pages."""
    urls = []
    for i in range(n):
        if i % 3 == 0:
            urls.append(site.url(f"/delay/1.0?i={i}"))
        elif i % 3 == 1:
            urls.append(site.url(f"/flaky/k{i}?fails=1&status=500"))
        else:
            urls.append(site.url(f"/delay/0.3?i={i}"))
    return urls


def control(env: dict[str, str], *args: str) -> dict[str, object]:
    result = run_cli([*args, "--json"], env, timeout=60)
    assert result.returncode == 0, result.stderr
    reply: dict[str, object] = orjson.loads(result.stdout)
    return reply


def cancel_mid_batch(server: EmbeddedServer, env: dict[str, str], batch: str, n: int, kill: Workers | None) -> None:
    r = sync_redis(server.url)
    try:
        assert wait_until(lambda: int(r.hget(keys.batch_meta(batch), "done") or 0) >= n // 10, 60)
        if kill is not None:
            kill.signal(0, signal.SIGKILL)
        reply = control(env, "cancel", batch)
        assert reply["changed"] is True, reply
        wait_complete(r, batch, 30)
    finally:
        r.close()


@pytest.mark.timeout(120)
def test_cancel_races_running_jobs_and_retries(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """2 workers crawl slow and flaky URLs; a cancel mid-way records every URL not done as `cancelled`, once:
    results committed by running jobs at the same time are counted once, and the batch completes once."""
    n = 600
    env = fault_env(server.url, concurrency=10, per_host_concurrency=40, backoff_base_s=0.2)
    submit(env, write_urls(tmp_path / "urls.txt", mixed_urls(site, n)), "cancel-race")
    with Workers(env, tmp_path, 2):
        cancel_mid_batch(server, env, "cancel-race", n, None)
        check = assert_exactly_once(server.url, "cancel-race", n)
    cancelled = check.by_error().get("cancelled", 0)
    assert 0 < cancelled < n, check.by_error()
    assert check.stats.cancelled_at is not None
    again = control(env, "cancel", "cancel-race")
    assert again["changed"] is False and "already complete" in str(again["message"])


@pytest.mark.timeout(150)
def test_cancel_with_a_worker_sigkilled_mid_batch(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """A worker dies holding jobs just before the cancel: its jobs' leases lapse, they run again elsewhere
    with nothing left to fetch, and every URL still has exactly one result."""
    n = 600
    env = fault_env(server.url, concurrency=10, per_host_concurrency=40, backoff_base_s=0.2)
    submit(env, write_urls(tmp_path / "urls.txt", mixed_urls(site, n)), "cancel-kill")
    with Workers(env, tmp_path, 2, supervise=False) as workers:
        cancel_mid_batch(server, env, "cancel-kill", n, workers)
        check = assert_exactly_once(server.url, "cancel-kill", n, settle_s=30)
    assert check.by_error().get("cancelled", 0) > 0


@pytest.mark.timeout(150)
def test_pause_stops_new_fetches_within_a_second_and_resume_completes_once(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    n = 400
    env = fault_env(server.url, concurrency=10, per_host_concurrency=40)
    urls = [site.url(f"/delay/0.2?i={i}") for i in range(n)]
    submit(env, write_urls(tmp_path / "urls.txt", urls), "held")
    r = sync_redis(server.url)
    try:
        with Workers(env, tmp_path, 2):
            assert wait_until(lambda: int(r.hget(keys.batch_meta("held"), "done") or 0) >= 40, 60)
            assert control(env, "pause", "held")["changed"] is True
            time.sleep(1.0)  # the pause is in force within a second; fetches in flight finish (0.2 s each)
            started = site.stats.total
            time.sleep(2.0)
            assert site.stats.total == started, "a fetch started more than 1 s after the pause"
            stats = orjson.loads(run_cli(["stats", "held", "--json"], env).stdout)
            assert stats["state"] == "paused" and stats["paused"] is True
            assert stats["done"] < n
            assert control(env, "resume", "held")["changed"] is True
            wait_complete(r, "held", 90, tmp_path)
            check = assert_exactly_once(server.url, "held", n)
        assert check.stats.succeeded == n  # handed back unchanged: no URL spent an attempt on the pause
        assert check.stats.attempts == n
    finally:
        r.close()
