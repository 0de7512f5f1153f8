"""Redis faults (issue 4, items 4, 5, 6 and 7): a restart with AOF, a restart that loses everything, an outage
in the middle of a submit, and a stall (`CLIENT PAUSE`)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis

from crawlq import keys
from crawlq.models import BatchStats
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import (
    QUEUE,
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
from tests.helpers import CRAWLQ, run_cli, wait_until


@pytest.mark.timeout(90)
def test_04_redis_restart_with_aof(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """Redis (AOF, appendfsync always) is stopped once 50 of N = 200 URLs are done and started again 2 s later on
    the same port and directory; 3 workers run under a supervisor.

    Invariants: exactly once for N = 200; every worker either rode out the outage or exited non-zero (so that
    its supervisor restarts it).
    """
    n, batch = 200, "aof"
    env = fault_env(server.url)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=100&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 3, "--concurrency", "5", supervise=True) as pool:
        assert submit(env, path, batch)["queued"] == n
        assert wait_until(lambda: counter(r, batch, "done") >= 50, 30), tail_logs(tmp_path)
        server.stop()
        time.sleep(2)
        server.start()
        wait_complete(sync_redis(server.url), batch, 60, tmp_path)
        exits = list(pool.exits)
    print(f"\n[item 4] worker exits during the outage (slot, code): {exits or 'none, all rode it out'}")
    assert_exactly_once(server.url, batch, n)
    assert all(code != 0 for _, code in exits), exits


@pytest.mark.timeout(90)
def test_05_redis_restart_without_persistence(site: ThreadedTargetSite, tmp_path: Path) -> None:
    """Redis without persistence restarts (all data lost) once 20 of N = 100 URLs are done; 2 supervised workers.

    Invariants: no stats sample ever says complete unless done == total == N; after the restart `crawlq stats`
    and `crawlq wait` exit 1 saying the batch is unknown and `crawlq status` lists no complete batch; re-submitting
    the same file with the same --batch queues all N again and finishes it exactly once for N = 100 (completion
    published once since the restart).
    """
    n, batch = 100, "volatile"
    samples: list[BatchStats | None] = []
    stop = threading.Event()
    with EmbeddedServer(appendonly=False) as server:
        env = fault_env(server.url)
        path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=200&i={i}") for i in range(n)])

        def sample() -> None:
            r = sync_redis(server.url)
            while not stop.wait(0.02):
                try:
                    raw = r.hgetall(keys.batch_meta(batch))
                except Exception:  # the server is down for a moment
                    continue
                counters = {k.decode(): v.decode() for k, v in raw.items()}
                samples.append(BatchStats.from_counters(batch, counters) if counters else None)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with Workers(env, tmp_path, 2, "--concurrency", "5", supervise=True):
                assert submit(env, path, batch)["queued"] == n
                r = sync_redis(server.url)
                assert wait_until(lambda: counter(r, batch, "done") >= 20, 30), tail_logs(tmp_path)
                server.restart(down_s=0.5)
                time.sleep(1.5)  # in-flight jobs commit into a Redis that no longer knows the batch
                stats = run_cli(["stats", batch], env)
                waited = run_cli(["wait", batch, "--timeout", "2"], env)
                status = run_cli(["status", "--json"], env)
                again = submit(env, path, batch)
                wait_complete(sync_redis(server.url), batch, 60, tmp_path)
        finally:
            stop.set()
            sampler.join()
        check = assert_exactly_once(server.url, batch, n)

    for result in (stats, waited):
        assert result.returncode == 1 and f"unknown batch '{batch}'" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert status.returncode == 0, status.stderr
    assert all(b["state"] != "complete" for b in orjson.loads(status.stdout)["batches"]), status.stdout
    assert again["queued"] == n, again
    assert None in samples, "the sampler never saw the batch unknown after the restart"
    complete = [s for s in samples if s is not None and s.complete]
    assert complete, "the sampler never saw the batch complete"
    assert all(s.done == s.total == n for s in complete), [s for s in complete if s.done != n][:3]
    assert check.stats.succeeded == n


def interrupted_submit(
    server: EmbeddedServer, env: dict[str, str], path: Path, batch: str
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `crawlq submit`; once its first script call has landed, freeze it (SIGSTOP), SIGKILL the server,
    let the submit run on (SIGCONT) into the outage, then start the server again from its AOF.
    Returns the submit's result and the number of URLs Redis kept."""
    r = sync_redis(server.url)
    proc = subprocess.Popen(
        [*CRAWLQ, "submit", str(path), "--batch", batch, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert wait_until(lambda: counter(r, batch, "total") > 0, 30, interval=0.001)
        os.kill(proc.pid, signal.SIGSTOP)
        server.stop(kill=True)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server.start()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return result, counter(sync_redis(server.url), batch, "total")


def queued_urls(r: redis.Redis, batch: str) -> tuple[int, int]:
    """(URLs carried by the batch's open jobs, how many of those jobs are in the queue with a payload)."""
    table = r.hgetall(keys.batch_jobs(batch))
    carried = sum(len(ids.split(b",")) for ids in table.values())
    queued = sum(r.zscore(QUEUE, job) is not None and r.exists(keys.arq_job(job.decode())) == 1 for job in table)
    return carried, queued


@pytest.mark.timeout(90)
def test_06_redis_down_during_submit(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """The server is SIGKILLed (AOF, appendfsync always) while `crawlq submit` enqueues N = 4,000 URLs, and stays
    down past the submit's retry window (2 s); it is started again, and the same submit runs again.

    Invariants: the interrupted submit exits 1 with the outage's line and one sentence (no traceback) and Redis
    kept 0 < K < N of its URLs; the re-run queues N - K and counts K duplicates; then total == N, the manifest
    holds N URLs, the batch's jobs carry exactly N URLs and every one of those jobs is in the queue with its
    payload.
    """
    n, batch = 4000, "interrupted"
    env = fault_env(server.url, redis_retry_window_s=2)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}") for i in range(n)])
    first, kept = interrupted_submit(server, env, path, batch)
    print(f"\n[item 6] interrupted submit: exit {first.returncode}, Redis kept {kept} of {n} URLs")
    print(f"[item 6] its stderr ends with: {first.stderr.strip().splitlines()[-1:]}")
    assert first.returncode == 1, first.stderr
    assert 0 < kept < n
    again = submit(env, path, batch)
    r = sync_redis(server.url)
    assert again["queued"] == n - kept and again["duplicates"] == kept, again
    assert counter(r, batch, "total") == n and r.hlen(keys.batch_urls(batch)) == n
    carried, queued = queued_urls(r, batch)
    assert carried == n
    assert queued == r.hlen(keys.batch_jobs(batch)) == r.zcard(QUEUE)
    lines = first.stderr.strip().splitlines()
    assert "Traceback" not in first.stderr and len(lines) == 2, f"not two lines ({len(lines)}): {lines}"
    assert "unreachable since" in lines[0] and "--batch interrupted queues only the rest" in lines[1], lines


@pytest.mark.timeout(120)
def test_06b_interrupted_submit_then_resubmit_completes(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """As item 6 with N = 2,000 (retry window 2 s), then the same submit again while 3 workers crawl the batch.

    Invariants: all N URLs are recorded within 30 s, and the batch completes within 5 s of the last one (the
    failed submit holds nothing open); exactly once for N = 2,000.
    """
    n, batch = 2000, "interrupted-crawl"
    env = fault_env(server.url, redis_retry_window_s=2)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}") for i in range(n)])
    first, kept = interrupted_submit(server, env, path, batch)
    assert first.returncode == 1 and 0 < kept < n, first.stderr
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 3, "--concurrency", "10"):
        again = submit(env, path, batch)
        assert again["queued"] + kept == n
        assert wait_until(lambda: counter(r, batch, "done") >= n, 30), tail_logs(tmp_path)
        if not wait_until(lambda: r.hexists(keys.batch_meta(batch), "finished_at"), 5):
            tokens = r.zrange(keys.batch_submitters(batch), 0, -1, withscores=True)
            left_s = [round(score / 1000 - time.time()) for _, score in tokens]
            raise AssertionError(
                f"all {n} URLs are recorded but the batch is not complete 5 s later: the failed submit's token "
                f"still holds it open {tokens} (for another {left_s} s)"
            )
    assert_exactly_once(server.url, batch, n)


@pytest.mark.timeout(90)
def test_07_redis_stall(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """`CLIENT PAUSE 3000 ALL` once 50 of N = 200 URLs (100 ms) are done; 3 supervised workers, default lease.

    Invariants: exactly once for N = 200; no worker exits; the target sees each URL once (N hits).
    """
    n, batch = 200, "stall"
    env = fault_env(server.url, lease_s=None)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=100&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 3, "--concurrency", "5", supervise=True) as pool:
        assert submit(env, path, batch)["queued"] == n
        assert wait_until(lambda: counter(r, batch, "done") >= 50, 30), tail_logs(tmp_path)
        paused_at = time.monotonic()
        r.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        wait_complete(r, batch, 60, tmp_path)
        elapsed = time.monotonic() - paused_at
        exits = list(pool.exits)
    print(f"\n[item 7] batch complete {elapsed:.1f} s after the 3 s pause began; worker exits: {exits}")
    assert exits == [], tail_logs(tmp_path)
    assert_exactly_once(server.url, batch, n)
    assert site.stats.hits["/delay"] == n
