"""Redis memory faults (issue 9, items 2 and 3): a Redis that evicts keys, and a full Redis (`noeviction`).

Each test starts its own server with `maxmemory` settings and runs the real `crawlq` CLI and workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crawlq import keys
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import (
    Workers,
    assert_exactly_once,
    counter,
    fault_env,
    run,
    settings_for,
    submit,
    sync_redis,
    tail_logs,
    wait_complete,
    write_urls,
)
from tests.helpers import run_cli, wait_until

EVICTING = ("--maxmemory-policy", "allkeys-lru")


@pytest.fixture
def evicting_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(extra_args=EVICTING) as running:
        yield running


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_evicting_redis_is_refused_by_submit_and_worker(
    evicting_server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """maxmemory-policy allkeys-lru: `crawlq submit` and `crawlq worker` exit 1 with one sentence saying what
    to set, and queue nothing; with CRAWLQ_ALLOW_EVICTION=1 the submit goes on with a warning."""
    env = fault_env(evicting_server.url)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}") for i in range(10)])
    refused = run_cli(["submit", str(path), "--batch", "evict"], env)
    worker = run_cli(["worker"], env, timeout=30)
    for result in (refused, worker):
        assert result.returncode == 1, result.stderr
        line = one_sentence(result.stderr)
        assert "evicts keys (maxmemory-policy allkeys-lru)" in line and "maxmemory-policy noeviction" in line, line
        assert "CRAWLQ_ALLOW_EVICTION=1" in line, line
    assert not sync_redis(evicting_server.url).exists(keys.batch_meta("evict"))
    allowed = run_cli(["submit", str(path), "--batch", "evict", "--json"], {**env, "CRAWLQ_ALLOW_EVICTION": "1"})
    assert allowed.returncode == 0, allowed.stderr
    assert orjson.loads(allowed.stdout)["queued"] == 10
    assert "evicts keys" in allowed.stderr and "URLs may be lost" in allowed.stderr, allowed.stderr


@pytest.mark.parametrize(
    ("renamed", "refused"), [(("CONFIG",), True), (("CONFIG", "INFO"), False)], ids=["info", "unreadable"]
)
def test_eviction_policy_read_without_config(
    renamed: tuple[str, ...], refused: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """CONFIG renamed away: the policy is read from INFO memory and still refused; neither readable: a warning."""
    from crawlq.connection import connect
    from crawlq.errors import EvictingRedis
    from crawlq.memory import check_eviction_policy

    extra = [*EVICTING]
    for command in renamed:
        extra += ["--rename-command", command, ""]
    with EmbeddedServer(extra_args=extra) as server:
        settings = settings_for(server.url)

        async def check() -> None:
            pool = await connect(settings)
            try:
                await check_eviction_policy(pool, settings)
            finally:
                await pool.aclose()

        if refused:
            with pytest.raises(EvictingRedis, match="allkeys-lru"):
                run(check())
        else:
            run(check())
            assert "cannot read maxmemory-policy" in caplog.text


@pytest.mark.timeout(180)
def test_evicted_batch_is_reported_lost(site: ThreadedTargetSite, tmp_path: Path) -> None:
    """maxmemory 4mb with allkeys-lru, forced past the refusal (CRAWLQ_ALLOW_EVICTION=1): a submit of 20,000
    URLs loses keys. After 2 workers ran, `wait` exits 1 with one sentence saying the batch is lost, and
    `stats` and `status` call it `lost`, never "running"."""
    n, batch = 20_000, "evicted"
    with EmbeddedServer(extra_args=[*EVICTING, "--maxmemory", "4mb"]) as server:
        env = fault_env(server.url, allow_eviction=1)
        path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}?pad={'x' * 40}") for i in range(n)])
        submitted = run_cli(["submit", str(path), "--batch", batch, "--json"], env, timeout=120)
        r = sync_redis(server.url)
        with Workers(env, tmp_path, 2, "--concurrency", "20"):
            # workers take what is left; the batch can never complete
            waited = run_cli(["wait", batch, "--timeout", "60"], env, timeout=90)
        stats = run_cli(["stats", batch, "--json"], env)
        status = run_cli(["status", "--json"], env)
        meta_left = r.exists(keys.batch_meta(batch))
    print(f"\n[eviction] submit: exit {submitted.returncode}; wait: exit {waited.returncode}: "
          f"{waited.stderr.strip().splitlines()[-1:]}")  # fmt: skip
    # Which keys LRU drops is up to Redis: the batch's counters themselves may go. Whatever went, no command
    # may call the batch complete or running: `submit` or `wait` end with exit 1 and one sentence.
    assert submitted.returncode in (0, 1) and "Traceback" not in submitted.stderr, submitted.stderr
    if submitted.returncode == 1:
        assert f"batch {batch} is lost" in submitted.stderr, submitted.stderr
    assert waited.returncode == 1, waited.stderr
    line = waited.stderr.strip().splitlines()[-1]
    assert "Traceback" not in waited.stderr, waited.stderr
    assert f"batch {batch} is lost" in line or f"unknown batch {batch!r}" in line, waited.stderr
    states = {b["batch"]: b["state"] for b in orjson.loads(status.stdout)["batches"]}
    # the list of recent batches may itself have been evicted; if it names the batch, it says lost (or unknown,
    # when its counters went too)
    assert states.get(batch, "lost") in ("lost", "unknown") and "running" not in states.values(), states
    if not meta_left:
        assert stats.returncode == 1 and "unknown batch" in stats.stderr, stats.stderr
        return
    assert stats.returncode == 0, stats.stderr
    figures = orjson.loads(stats.stdout)
    assert figures["state"] == "lost" and figures["lost_reason"], figures


def fill_up(server: EmbeddedServer) -> None:
    """Make the server full: maxmemory below what it uses, so that every write that needs memory is refused."""
    sync_redis(server.url).config_set("maxmemory", 1)


def make_room(server: EmbeddedServer) -> None:
    sync_redis(server.url).config_set("maxmemory", 0)


@pytest.mark.timeout(120)
def test_out_of_memory_during_submit_is_named(site: ThreadedTargetSite, tmp_path: Path) -> None:
    """noeviction and full: `crawlq submit` exits 1 with one sentence naming the out-of-memory state with the
    figures of INFO memory (not "lost Redis"); with memory raised, the same submit queues the rest and the
    batch completes exactly once."""
    n, batch = 3000, "oom-submit"
    with EmbeddedServer(extra_args=["--maxmemory", "3mb"]) as server:
        env = fault_env(server.url)
        path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}?pad={'y' * 300}") for i in range(n)])
        first = run_cli(["submit", str(path), "--batch", batch], env)
        print(f"\n[oom] submit: exit {first.returncode}: {first.stderr.strip()}")
        assert first.returncode == 1, first.stderr
        line = one_sentence(first.stderr)
        assert f"Redis at redis://127.0.0.1:{server.port}/0 is out of memory: maxmemory 3145728 bytes, used " in line
        assert "lost Redis" not in line
        make_room(server)
        kept = counter(sync_redis(server.url), batch, "total")
        again = submit(env, path, batch)
        assert again["queued"] + kept == n, (again, kept)
        with Workers(env, tmp_path, 2, "--concurrency", "20"):
            wait_complete(sync_redis(server.url), batch, 60, tmp_path)
        assert_exactly_once(server.url, batch, n)


@pytest.mark.timeout(150)
def test_worker_rides_out_out_of_memory(site: ThreadedTargetSite, tmp_path: Path) -> None:
    """noeviction; Redis becomes full while 3 supervised workers crawl N = 300 URLs (50 ms each). For 4 s no
    result can be committed: no worker exits, the logs name the out-of-memory state without a traceback or
    binary data, no job is retried (no try spent: no split, no `max_tries`). Once memory is raised, the batch
    completes exactly once and the target saw every URL once."""
    n, batch = 300, "oom-worker"
    with EmbeddedServer() as server:
        env = fault_env(server.url)
        path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=50&i={i}") for i in range(n)])
        r = sync_redis(server.url)
        with Workers(env, tmp_path, 3, "--concurrency", "5", supervise=True) as pool:
            assert submit(env, path, batch)["queued"] == n
            assert wait_until(lambda: counter(r, batch, "done") >= 30, 30), tail_logs(tmp_path)
            fill_up(server)
            time.sleep(1.0)
            stalled = counter(r, batch, "done")
            time.sleep(3.0)
            assert counter(r, batch, "done") == stalled, "results were committed into a full Redis"
            make_room(server)
            wait_complete(r, batch, 60, tmp_path)
            exits = list(pool.exits)
        check = assert_exactly_once(server.url, batch, n)
    logs = b"".join(log.read_bytes() for log in sorted(tmp_path.glob("worker-*.log")))
    text = logs.decode("utf-8")  # binary msgpack in the log would not decode
    print(f"\n[oom] done when Redis filled up: {stalled}/{n}; worker exits: {exits}")
    assert exits == [], tail_logs(tmp_path)
    assert "is out of memory: maxmemory 1 bytes, used " in text, tail_logs(tmp_path)
    assert "Traceback" not in text and "crashed a worker" not in text, tail_logs(tmp_path, 40)
    assert not check.by_error().get("max_tries")
    assert site.stats.hits["/delay"] == n
