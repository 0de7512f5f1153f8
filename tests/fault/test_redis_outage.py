"""Redis outages (issue 9, item 4) and what an operator sees (item 9): `wait`, `status --watch` and workers
ride out an outage within CRAWLQ_REDIS_RETRY_WINDOW_S with one line at its start and one at its end, and
exit 1 with one sentence after it; `worker --check` says why it fails; workers log start, SIGTERM, hand-back.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis

from crawlq import keys
from crawlq.connection import redis_hint
from crawlq.settings import Settings
from crawlq_local.server import EmbeddedServer, free_port
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import (
    Workers,
    assert_exactly_once,
    counter,
    fault_env,
    submit,
    sync_redis,
    tail_logs,
    write_urls,
)
from tests.helpers import CRAWLQ, run_cli, wait_until


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CRAWLQ, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    )


def connected(r: redis.Redis, batch: str, watcher: subprocess.Popen[str], timeout_s: float = 30) -> None:
    """Wait until `crawlq wait` subscribed to the batch's events and `status --watch` printed its first table."""
    assert wait_until(
        lambda: dict(r.pubsub_numsub(keys.batch_events(batch))).get(keys.batch_events(batch).encode(), 0) > 0, timeout_s
    )
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.append(watcher.stdout.readline() if watcher.stdout else ""))
    reader.start()
    reader.join(timeout_s)
    assert printed and printed[0], "status --watch printed nothing"


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


@contextmanager
def dropping_connections(redis_url: str, every_s: float, kinds: tuple[str, ...] = ("normal",)) -> Iterator[list[int]]:
    """Redis drops every client connection of `kinds` (`CLIENT KILL TYPE`, as a proxy or a failover does)
    every `every_s` while the block runs; yields a one-item list counting the connections dropped."""
    killed, calm = [0], threading.Event()

    def storm() -> None:
        killer = redis.Redis.from_url(redis_url, single_connection_client=True)
        while not calm.is_set():
            for kind in kinds:
                killed[0] += int(killer.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes"))
            time.sleep(every_s)
        killer.close()

    stormer = threading.Thread(target=storm)
    stormer.start()
    try:
        yield killed
    finally:
        calm.set()
        stormer.join()


@dataclass(slots=True)
class Ridden:
    """What `crawlq wait`, `crawlq status --watch` and the workers did while a fault ran mid-batch."""

    wait_code: int
    wait_err: str
    watch_err: str
    exits: list[tuple[int, int]]


def ride_out(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path, batch: str, *, n: int, delay_ms: int,
    concurrency: int, fault: Callable[[], None],
) -> Ridden:  # fmt: skip
    """Submit `n` URLs of `delay_ms`, start `wait` and `status --watch` and see them connected, then start two
    supervised workers (retry window 20 s), run `fault` once a few URLs are done, and let `wait` see the batch
    through. The workers start last: a batch that finished before `wait` subscribed would test nothing (and on
    a busy machine a CLI can take longer to start than a small batch takes to run)."""
    env = fault_env(server.url, redis_retry_window_s=20)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms={delay_ms}&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    assert submit(env, path, batch)["queued"] == n
    waiter = spawn(["wait", batch, "--timeout", "120"], env)
    watcher = spawn(["status", "--watch", "--interval", "0.5"], env)
    try:
        connected(r, batch, watcher)
        with Workers(env, tmp_path, 2, "--concurrency", str(concurrency), supervise=True) as pool:
            assert wait_until(lambda: counter(r, batch, "done") >= n // 10, 30), tail_logs(tmp_path)
            fault()
            _, wait_err = waiter.communicate(timeout=90)
            assert watcher.poll() is None, watcher.communicate()[1]
            watcher.send_signal(signal.SIGINT)
            _, watch_err = watcher.communicate(timeout=20)
            return Ridden(waiter.returncode, wait_err, watch_err, list(pool.exits))
    finally:
        for process in (waiter, watcher):
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.mark.timeout(150)
def test_wait_watch_and_workers_ride_out_an_outage(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """The server stops for 4 s mid-batch (AOF), window 20 s. `crawlq wait` and `crawlq status --watch` print
    one "unreachable since" line, go on, and `wait` exits 0 at completion; every worker logs the outage and
    the recovery and none exits; exactly once for N = 300."""
    n, batch = 300, "outage"
    ridden = ride_out(
        server, site, tmp_path, batch, n=n, delay_ms=150, concurrency=5, fault=lambda: server.restart(down_s=4)
    )
    wait_err, watch_err, exits = ridden.wait_err, ridden.watch_err, ridden.exits
    assert_exactly_once(server.url, batch, n)
    print(f"\n[outage] wait said: {[line for line in wait_err.splitlines() if 'Redis' in line]}")
    assert ridden.wait_code == 0, wait_err
    for err in (wait_err, watch_err):
        no_traceback(err)
        assert sum("unreachable since" in line for line in err.splitlines()) == 1, err
        assert "is back after" in err, err
    assert exits == [], tail_logs(tmp_path)
    for log in sorted(tmp_path.glob("worker-*.log")):
        text = log.read_text()
        assert "unreachable since" in text and "is back after" in text, text[-2000:]


@pytest.mark.timeout(120)
def test_outage_longer_than_the_window_ends_everything_with_one_sentence(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """The server stops for good mid-batch, window 3 s. `wait`, `status --watch` and both workers exit 1
    within the window plus a few seconds; wait and watch end with one sentence and no traceback; the workers
    log the outage and why they exit."""
    n, batch, window_s = 200, "gone", 3
    env = fault_env(server.url, redis_retry_window_s=window_s)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=300&i={i}") for i in range(n)])
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 2, "--concurrency", "5") as pool:
        assert submit(env, path, batch)["queued"] == n
        waiter = spawn(["wait", batch], env)
        watcher = spawn(["status", "--watch", "--interval", "0.5"], env)
        assert wait_until(lambda: counter(r, batch, "done") >= 20, 30), tail_logs(tmp_path)
        connected(r, batch, watcher)
        stopped = time.monotonic()
        server.stop(kill=True)
        assert wait_until(lambda: all(proc.poll() is not None for proc in pool.procs), window_s + 10), tail_logs(
            tmp_path
        )
        workers_done_s = time.monotonic() - stopped
        codes = [proc.returncode for proc in pool.procs]
        _, wait_err = waiter.communicate(timeout=window_s + 10)
        _, watch_err = watcher.communicate(timeout=window_s + 10)
        clients_done_s = time.monotonic() - stopped
    print(f"\n[outage] workers exited {workers_done_s:.1f} s, wait/watch {clients_done_s:.1f} s after the stop")
    assert codes == [1, 1], tail_logs(tmp_path)
    assert waiter.returncode == 1 and watcher.returncode == 1, (wait_err, watch_err)
    for err in (wait_err, watch_err):
        no_traceback(err)
        last = err.strip().splitlines()[-1]
        assert "unreachable for" in last and "CRAWLQ_REDIS_RETRY_WINDOW_S" in last, err
        assert "set CRAWLQ_REDIS_URL" not in err, err
    for log in sorted(tmp_path.glob("worker-*.log")):
        text = log.read_text()
        assert "unreachable since" in text and "exiting 1" in text, text[-2000:]


def test_redis_url_hint_only_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    monkeypatch.delenv("CRAWLQ_REDIS_URL", raising=False)
    assert redis_hint(Settings()) == "; set CRAWLQ_REDIS_URL"
    assert redis_hint(Settings(redis_url="redis://127.0.0.1:1/0")) == ""
    monkeypatch.setenv("CRAWLQ_REDIS_URL", "redis://127.0.0.1:1/0")
    assert redis_hint(Settings()) == ""
    env = fault_env(f"redis://127.0.0.1:{free_port()}/0")
    result = run_cli(["stats", "x"], env)
    assert result.returncode == 1 and "cannot reach Redis" in result.stderr, result.stderr
    assert "set CRAWLQ_REDIS_URL" not in result.stderr


@pytest.mark.timeout(90)
def test_worker_check_says_why_and_lifecycle_is_logged(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """`worker --check` fails with one line naming the missing heartbeat, or the unreachable Redis, and passes
    with a live worker. A worker logs its start with its settings, SIGTERM, and the hand-back with counts."""
    env = fault_env(server.url, heartbeat_interval_s=0.5, shutdown_grace_s=1.5)
    lonely = run_cli(["worker", "--check"], env)
    assert lonely.returncode == 1 and "no heartbeat from a worker on host" in lonely.stderr, lonely.stderr
    assert len(lonely.stderr.strip().splitlines()) == 1, lonely.stderr
    down = run_cli(["worker", "--check"], fault_env(f"redis://127.0.0.1:{free_port()}/0"))
    assert down.returncode == 1 and "cannot reach Redis" in down.stderr, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms=3000&i={i}") for i in range(20)])
    with Workers(env, tmp_path, 1, "--concurrency", "5") as pool:
        assert wait_until(lambda: run_cli(["worker", "--check"], env).returncode == 0, 20)
        submit(env, path, "slow")
        r = sync_redis(server.url)
        assert wait_until(lambda: bool(r.keys("arq:in-progress:*")), 20)
        time.sleep(0.5)
        pool.signal(0, signal.SIGTERM)
        pool.procs[0].wait(timeout=20)
        code = pool.procs[0].returncode
    text = (tmp_path / "worker-0.log").read_text()
    assert code == 0, text
    assert "started: Redis redis://127.0.0.1:" in text and "concurrency 5" in text, text
    assert "got SIGTERM: draining" in text, text
    stopped = [line for line in text.splitlines() if "stopped:" in line]
    assert stopped and "handed back to the queue" in stopped[0], text
    handed = int(stopped[0].split("URLs done, ")[1].split()[0])
    assert handed > 0, stopped


@pytest.mark.timeout(150)
def test_workers_ride_out_connections_the_server_drops(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """Redis drops every client connection, pub/sub ones too (`CLIENT KILL`, as a proxy or a failover does),
    every 0.01 s for 6 s mid-batch. No worker exits, `crawlq wait` and `status --watch` go on without a
    traceback and `wait` exits 0 at completion; exactly once for N = 400. A dropped connection that the next
    try mends is not reported as an outage, so the logs stay short."""
    n, batch, killed = 400, "dropped", [0]

    def storm() -> None:
        with dropping_connections(server.url, 0.01, ("normal", "pubsub")) as dropped:
            time.sleep(6)
        killed[0] = dropped[0]

    ridden = ride_out(server, site, tmp_path, batch, n=n, delay_ms=40, concurrency=10, fault=storm)
    wait_err, watch_err, exits = ridden.wait_err, ridden.watch_err, ridden.exits
    logs = [log.read_text() for log in sorted(tmp_path.glob("worker-*.log"))]
    reported = [text.count("unreachable since") for text in logs]
    print(f"\n[dropped] {killed[0]} connections dropped; outages the workers reported: {reported}")
    assert killed[0] > 0
    assert exits == [], tail_logs(tmp_path)
    assert ridden.wait_code == 0, wait_err
    for err in (wait_err, watch_err):
        no_traceback(err)
        # a dropped connection is not an outage: a line per drop would be one per read (`wait` reads every 0.2 s,
        # `status --watch` every 0.5 s: 30 and 12 in the storm). On a loaded machine a CLI can miss every try
        # for a second of it (each new connection lives 10 ms) and says so, once a spell
        assert err.count("unreachable since") <= 6, err
    assert max(reported) <= 10, tail_logs(tmp_path)  # two lines per dropped connection: ~100 each
    assert not any("crawl failed" in text for text in logs), tail_logs(tmp_path, 60)  # no job lost to a drop
    assert_exactly_once(server.url, batch, n)


@pytest.mark.timeout(150)
def test_a_submit_rides_out_connections_the_server_drops(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """`crawlq submit` of 10,000 URLs while Redis drops every normal client connection every 0.01 s: it goes on
    within the retry window and reports every URL queued and none a duplicate; the workers then crawl each
    exactly once. (A reply lost after its call ran is rare here; tests/test_store.py replays such a call.)"""
    n, batch = 10_000, "dropped-submit"
    env = fault_env(server.url, redis_retry_window_s=20)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/fast?i={i}") for i in range(n)])
    with dropping_connections(server.url, 0.01) as killed:
        result = run_cli(["submit", str(path), "--batch", batch, "--json"], env, timeout=120)
    print(f"\n[dropped submit] {killed[0]} connections dropped during the submit")
    assert killed[0] > 0
    no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert (report["queued"], report["duplicates"], report["invalid"]) == (n, 0, 0), report
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 2, "--concurrency", "20"):
        assert wait_until(lambda: counter(r, batch, "done") >= n, 120), tail_logs(tmp_path)
    assert_exactly_once(server.url, batch, n)


@pytest.mark.timeout(60)
def test_a_submit_outlived_by_an_outage_ends_with_one_sentence_naming_what_was_queued(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    """The server stops for good mid-submit (300,000 URLs), window 3 s: `crawlq submit` says once that Redis is
    unreachable, then, past the window, exits 1 with one sentence: how many URLs were queued, and that
    `--batch` queues only the rest. No traceback."""
    env = fault_env(server.url, redis_retry_window_s=3)
    path = write_urls(tmp_path / "urls.txt", [f"http://127.0.0.1:9/p?i={i}" for i in range(300_000)])
    started = time.monotonic()
    submitting = spawn(["submit", str(path), "--batch", "cut"], env)
    r = sync_redis(server.url)
    assert wait_until(lambda: counter(r, "cut", "total") > 0, 20), "the submit queued nothing"
    server.stop(kill=True)
    _, err = submitting.communicate(timeout=40)
    elapsed = time.monotonic() - started
    print(f"\n[submit outage] exit {submitting.returncode} after {elapsed:.1f} s: {err.strip()}")
    no_traceback(err)
    assert submitting.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "unreachable since" in lines[0], err
    assert "during the submit of batch cut after queuing" in lines[1], err
    assert "--batch cut queues only the rest" in lines[1], err


@pytest.mark.timeout(120)
def test_a_submit_starts_while_the_server_drops_connections(server: EmbeddedServer, tmp_path: Path) -> None:
    """Twenty small `crawlq submit`s, one after another, while Redis drops every normal connection every 2 ms:
    each starts and exits 0. arq pings a new connection before crawlq's retry wraps the pool, so a connection
    dropped while it was greeted failed the submit at once (4 of 30 such starts, by hand, before)."""
    env = fault_env(server.url, redis_retry_window_s=20)
    path = write_urls(tmp_path / "urls.txt", [f"http://127.0.0.1:9/p?i={i}" for i in range(50)])
    with dropping_connections(server.url, 0.002) as killed:
        results = [run_cli(["submit", str(path), "--batch", f"start-{i}", "--json"], env) for i in range(20)]
    print(f"\n[submit starts] {killed[0]} connections dropped over 20 submits")
    assert killed[0] > 0
    failed = [result.stderr.strip() for result in results if result.returncode != 0]
    assert not failed, failed
    assert all(orjson.loads(result.stdout)["queued"] == 50 for result in results)
