"""Worker faults (issue 4, items 1, 2, 3, 8 and 10): SIGKILL, a crash loop, SIGTERM, a frozen worker whose
job is run a second time, and a poison URL that kills its worker every time."""

from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path

import pytest
import redis

from crawlq import keys
from crawlq.codec import unpack
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import (
    POISON_WORKER,
    Workers,
    assert_exactly_once,
    counter,
    fault_env,
    submit,
    sync_redis,
    tail_logs,
    wait_complete,
    write_urls,
)
from tests.helpers import wait_until
from workers.commits import FLUSH_S


def longest_plateau(samples: list[tuple[float, int]]) -> tuple[float, int]:
    """(start time, value) of the longest run of equal `done` samples: the survivors idle, waiting on the lease."""
    best, start = (0.0, 0.0, samples[0][1]), samples[0]
    for t, done in samples[1:]:
        if done != start[1]:
            start = (t, done)
        if t - start[0] > best[0]:
            best = (t - start[0], start[0], done)
    return best[1], best[2]


@pytest.mark.timeout(120)
def test_01_sigkill_one_of_three_workers_mid_batch(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """SIGKILL 1 of 3 workers once 60 of N = 300 slow URLs (200 ms) are done, with the default lease (15 s).

    Invariants: exactly once for N = 300; recovery (from the SIGKILL until the killed worker's URLs are recorded
    and the batch completes) <= 30 s; target hits <= N + the killed worker's URLs in flight (concurrency) + those
    finished but not yet committed (at most one flush interval of pages per slot): only those run twice.
    """
    n, batch, concurrency = 300, "sigkill", 5
    env = fault_env(server.url, lease_s=None)  # the default lease: the bound holds with default settings
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=200&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 3, "--concurrency", str(concurrency)) as pool:
        assert submit(env, path, batch)["queued"] == n
        assert wait_until(lambda: counter(r, batch, "done") >= 60, 30), tail_logs(tmp_path)
        pool.signal(0, signal.SIGKILL)
        killed_at, done_at_kill = time.monotonic(), counter(r, batch, "done")
        samples: list[tuple[float, int]] = []
        deadline = killed_at + 45
        while not r.hexists(keys.batch_meta(batch), "finished_at") and time.monotonic() < deadline:
            samples.append((time.monotonic() - killed_at, counter(r, batch, "done")))
            time.sleep(0.1)
        completed_at = wait_complete(r, batch, 1, tmp_path)
        assert pool.procs[0].wait(5) == -signal.SIGKILL
    recovery_s = completed_at - killed_at
    idle_from, idle_done = longest_plateau(samples) if samples else (0.0, done_at_kill)
    print(
        f"\n[item 1] SIGKILL at done={done_at_kill}/{n}; survivors idle from +{idle_from:.1f} s at done={idle_done}; "
        f"killed worker's URLs re-run, batch complete at +{recovery_s:.1f} s (recovery time, lease 15 s)"
    )
    assert_exactly_once(server.url, batch, n)
    assert recovery_s <= 30, f"recovery took {recovery_s:.1f} s"
    refetch_bound = concurrency + concurrency * math.ceil(FLUSH_S / 0.2)
    assert n <= site.stats.hits["/delay"] <= n + refetch_bound, site.stats.hits


@pytest.mark.timeout(150)
def test_02_crash_loop(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """A random worker of 3 is SIGKILLed every 2.5 s for 30 s (or until the batch completes) while a supervisor
    restarts it; N = 600 URLs of 400 ms keep 3 workers x 3 fetches busy for about that long.

    Invariants: exactly once for N = 600; >= 8 kills landed mid-batch; the only failures, if any, are
    `max_tries` (a URL whose job was killed with its worker 4 times).
    """
    n, batch = 600, "crashloop"
    env = fault_env(server.url, max_job_tries=4)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=400&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    rng = random.Random(20240604)

    def finished() -> bool:
        return bool(r.hexists(keys.batch_meta(batch), "finished_at"))

    kills = 0
    with Workers(env, tmp_path, 3, "--concurrency", "3", supervise=True) as pool:
        assert submit(env, path, batch)["queued"] == n
        started = time.monotonic()
        while time.monotonic() - started < 30 and not wait_until(finished, 2.5, interval=0.1):
            pool.kill_random(rng)
            kills += 1
        chaos_s = time.monotonic() - started
        wait_complete(r, batch, 60, tmp_path)
        restarts = pool.starts - 3
    check = assert_exactly_once(server.url, batch, n)
    print(
        f"\n[item 2] {kills} SIGKILLs over {chaos_s:.0f} s, {restarts} restarts; "
        f"target hits {site.stats.hits['/delay']} for {n} URLs; outcomes {check.by_error()}"
    )
    assert kills >= 8
    assert set(check.by_error()) <= {None, "max_tries"}


def live_beats(r: redis.Redis) -> list[dict[str, object]]:
    """The heartbeats of the live workers."""
    beats = []
    for key in r.scan_iter(match=f"{keys.WORKER_PREFIX}*"):
        raw = r.get(key)
        if raw is not None:
            beats.append(unpack(raw))
    return beats


@pytest.mark.timeout(90)
def test_03_sigterm_mid_batch(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """SIGTERM a worker while it fetches all N = 5 URLs of a batch (8 s each), with a second worker idle.

    Invariants: the worker exits 0 within shutdown_grace_s (2 s) + 3 s; exactly once for N = 5; the 5
    handed-back URLs are fetched again within 5 s of the SIGTERM (the lease is the default 15 s, so they did not
    wait for it); every record has attempts == 1 and stats attempts == 5 (the cancelled attempts are not counted).
    """
    n, batch = 5, "sigterm"
    # chunk_size 1: a worker's backlog estimate starts at one URL per job, so it claims all N jobs at once.
    env = fault_env(server.url, lease_s=None, fetch_timeout_s=30, chunk_size=1)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=8000&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 1, "--concurrency", "10", name="first") as first:
        assert submit(env, path, batch)["queued"] == n
        assert wait_until(lambda: site.stats.in_flight == n, 15), tail_logs(tmp_path)
        with Workers(env, tmp_path, 1, "--concurrency", "10", name="second"):
            assert wait_until(lambda: len(live_beats(r)) == 2, 15), tail_logs(tmp_path)
            assert site.stats.in_flight == n, "the first worker finished before its SIGTERM; raise the delay"
            termed_at = time.monotonic()
            first.signal(0, signal.SIGTERM)
            code = first.procs[0].wait(10)
            exit_s = time.monotonic() - termed_at
            assert wait_until(lambda: site.stats.hits["/delay"] >= 2 * n, 10), tail_logs(tmp_path)
            restart_s = time.monotonic() - termed_at
            wait_complete(r, batch, 20, tmp_path)
    print(f"\n[item 3] SIGTERM: exit code {code} after {exit_s:.1f} s; handed-back URLs re-fetched {restart_s:.1f} s")
    assert code == 0, tail_logs(tmp_path)
    assert exit_s <= 2 + 3
    assert restart_s <= 5
    assert site.stats.hits["/delay"] == 2 * n
    check = assert_exactly_once(server.url, batch, n)
    assert all(record.ok and record.attempts == 1 for record in check.records), check.records
    assert check.stats.attempts == n


@pytest.mark.timeout(90)
def test_08_frozen_worker_job_runs_twice_counted_once(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """A worker's event loop stops (SIGSTOP) for longer than its lease (3 s) while it fetches all N = 5 URLs; a
    second worker runs the same jobs; then the first resumes (SIGCONT) and commits its results too.

    Invariants: the target serves every URL twice (2N = 10 hits); exactly once for N = 5; stats attempts == 5;
    the resumed worker reports all 5 URLs done and keeps running.
    """
    n, batch = 5, "frozen"
    env = fault_env(server.url, fetch_timeout_s=30, chunk_size=1)  # claim all N jobs at once (see test_03)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=1500&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 1, "--concurrency", "10", name="frozen") as frozen:
        assert submit(env, path, batch)["queued"] == n
        assert wait_until(lambda: site.stats.in_flight == n, 15), tail_logs(tmp_path)
        pid = frozen.signal(0, signal.SIGSTOP)
        try:
            with Workers(env, tmp_path, 1, "--concurrency", "10", name="second"):
                wait_complete(r, batch, 30, tmp_path)
                assert site.stats.hits["/delay"] == 2 * n
        finally:
            frozen.signal(0, signal.SIGCONT)

        def resumed_and_done() -> bool:
            beats = [b for b in live_beats(r) if str(b["id"]).split(":")[1] == str(pid)]
            return bool(beats) and beats[0]["urls_done"] == n and beats[0]["jobs_running"] == 0

        assert wait_until(resumed_and_done, 15), live_beats(r)
        assert frozen.procs[0].poll() is None
    check = assert_exactly_once(server.url, batch, n)
    assert check.stats.attempts == n and all(record.ok for record in check.records)


@pytest.mark.timeout(120)
def test_10_poison_url_fails_after_max_tries(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """One URL of N = 300 makes its worker process exit every time it is fetched (`os._exit(1)`, test hook);
    2 such workers run under a supervisor, max_job_tries = 2, lease 3 s.

    Invariants: exactly once for N = 300; the poison URL has exactly one record, error `max_tries`; the other
    299 succeed; the target never sees the poison URL.
    """
    n, batch = 300, "poison"
    env = fault_env(server.url)
    urls = [site.url(f"/page/{i}") for i in range(n - 1)] + [site.url("/page/999?poison=1")]
    path = write_urls(tmp_path / "urls.txt", urls)
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 2, "--concurrency", "5", supervise=True, command=POISON_WORKER) as pool:
        assert submit(env, path, batch)["queued"] == n
        wait_complete(r, batch, 60, tmp_path)
        deaths = [code for _, code in pool.exits]
    check = assert_exactly_once(server.url, batch, n)
    poison = [record for record in check.records if "poison" in record.url]
    print(f"\n[item 10] worker exits {deaths}; poison record: {poison[0].error}: {poison[0].message}")
    assert len(poison) == 1 and poison[0].error == "max_tries" and not poison[0].ok
    failed = [(record.url, record.error, record.message) for record in check.records if not record.ok]
    assert check.stats.succeeded == n - 1 and check.stats.error_counts == {"max_tries": 1}, (
        failed,
        tail_logs(tmp_path),
    )
    assert len(deaths) >= 3 and set(deaths) == {1}
    assert site.stats.hits["/page/999"] == 0


@pytest.mark.timeout(120)
def test_11_sigkill_one_of_two_workers_many_hosts(server: EmbeddedServer, tmp_path: Path) -> None:
    """Many hosts (12 x 25 URLs, 200 ms each, 2 per host): SIGKILL one of two workers mid-batch. The hosts it
    was crawling (its leases and the URLs of its jobs) are crawled by the other within 30 s, exactly once,
    and no host ever had more than its limit in flight."""
    n_hosts, per_host, batch = 12, 25, "sigkill-hosts"
    env = fault_env(server.url, per_host_concurrency=2, chunk_size=10)
    sites = [ThreadedTargetSite(f"127.0.0.{40 + i}") for i in range(n_hosts)]
    for running in sites:
        running.__enter__()
    try:
        urls = [running.url(f"/delay?ms=200&i={i}") for i in range(per_host) for running in sites]
        path = write_urls(tmp_path / "urls.txt", urls)
        r = sync_redis(server.url)
        with Workers(env, tmp_path, 2, "--concurrency", "20") as pool:
            assert submit(env, path, batch)["queued"] == len(urls)
            assert wait_until(lambda: counter(r, batch, "done") >= 60, 30), tail_logs(tmp_path)
            pool.signal(0, signal.SIGKILL)
            killed_at = time.monotonic()
            completed_at = wait_complete(r, batch, 45, tmp_path)
            assert pool.procs[0].wait(5) == -signal.SIGKILL
        assert completed_at - killed_at <= 30, f"recovery took {completed_at - killed_at:.1f} s"
        assert_exactly_once(server.url, batch, len(urls))
        peaks = [running.stats.max_in_flight for running in sites]
        assert max(peaks) <= 2, peaks
        # refetched: the killed worker's fetches in flight and its outcomes not yet committed (one flush interval)
        refetch_bound = 20 + 20 * math.ceil(FLUSH_S / 0.2)
        assert sum(running.stats.hits["/delay"] for running in sites) <= len(urls) + refetch_bound
    finally:
        for running in sites:
            running.__exit__(None, None, None)
