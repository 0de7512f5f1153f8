"""Fault-injection fixtures: a private server per test, a local target site, supervised worker processes
started through the real CLI, and the one "exactly once" check every fault test ends with.

Everything runs on loopback with real processes and real signals. Settings are short and passed through
the environment (`fault_env`), so each test is bounded in time.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson
import pytest
import redis

from crawlq import keys
from crawlq.models import BatchStats, UrlResult
from crawlq.settings import Settings
from crawlq_local.processes import WORKER_COMMAND, spawn, stop
from crawlq_local.server import EmbeddedServer, find_server_binary, free_port
from tests.conftest import make_settings
from tests.helpers import cli_env, run_cli, wait_until

T = TypeVar("T")
QUEUE = "crawlq:queue"  #: Settings().queue_name; the fault env never changes it
POISON_WORKER = [sys.executable, "-c", "from tests.fault.conftest import poison_worker_main; poison_worker_main()"]


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    """A server of this test's own, with AOF (`appendfsync always`), so the test may stop and restart it."""
    with EmbeddedServer(appendonly=True) as running:
        yield running


def fault_env(redis_url: str, **settings: object) -> dict[str, str]:
    """`cli_env` plus short fault-test settings; a value of None leaves that setting at its default."""
    short: dict[str, object] = {
        "robots_enabled": "0",
        "lease_s": 3,
        "shutdown_grace_s": 2,
        "reconcile_interval_s": 1,
        "max_job_tries": 2,
    }
    short.update(settings)
    env = cli_env(redis_url, **{name: value for name, value in short.items() if value is not None})
    for name, value in short.items():
        if value is None:
            env.pop(f"CRAWLQ_{name.upper()}", None)
    return env


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def settings_for(redis_url: str) -> Settings:
    return make_settings(redis_url=redis_url)


def sync_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=10)


def write_urls(path: Path, urls: Sequence[str]) -> Path:
    path.write_text("\n".join(urls) + "\n")
    return path


def submit(env: dict[str, str], path: Path, batch: str, timeout: float = 60) -> dict[str, Any]:
    """`crawlq submit FILE --batch BATCH --json`; returns its report."""
    result = run_cli(["submit", str(path), "--batch", batch, "--json"], env, timeout=timeout)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


def counter(r: redis.Redis, batch: str, field: str) -> int:
    value = r.hget(keys.batch_meta(batch), field)
    return int(value) if value is not None else 0


def publishes(r: redis.Redis, batch: str) -> int:
    """How many times the batch was completed (and its completion published): commit.lua counts every
    completion in the batch's `completions` counter, in the same step as the PUBLISH and `finished_at`."""
    return int(r.hget(keys.batch_meta(batch), "completions") or 0)


def in_progress_keys(r: redis.Redis) -> list[bytes]:
    return list(r.scan_iter(match=keys.arq_in_progress("*"), count=1000))


def wait_complete(r: redis.Redis, batch: str, timeout: float, log_dir: Path | None = None) -> float:
    """Wait for the batch's `finished_at`; returns the monotonic time it was first seen."""
    if not wait_until(lambda: r.hexists(keys.batch_meta(batch), "finished_at"), timeout, interval=0.05):
        meta = {k.decode(): v.decode() for k, v in r.hgetall(keys.batch_meta(batch)).items() if b":" not in k}
        detail = tail_logs(log_dir) if log_dir else ""
        raise AssertionError(f"batch {batch} not complete after {timeout:g} s: {meta}\n{detail}")
    return time.monotonic()


def tail_logs(log_dir: Path, lines: int = 15) -> str:
    out = []
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        out.append(f"--- {log.name}\n" + "\n".join(text[-lines:]))
    return "\n".join(out)


# ---------------------------------------------------------------- the exactly-once check
@dataclass
class BatchCheck:
    stats: BatchStats
    records: list[UrlResult]

    def by_error(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for record in self.records:
            counts[record.error] = counts.get(record.error, 0) + 1
        return counts


async def _read_batch(redis_url: str, batch: str) -> tuple[BatchStats, list[UrlResult], dict[str, int]]:
    from producer.client import Client

    async with await Client.connect(settings_for(redis_url)) as client:
        stats = await client.stats(batch)
        records = [record async for record in client.results(batch)]
        depth = dict(await client.queue_depth())
    return stats, records, depth


def assert_exactly_once(
    redis_url: str, batch: str, n: int, *, published: int | None = 1, settle_s: float = 15.0
) -> BatchCheck:
    """Exactly once: N records (one per URL); stats done == total == N and succeeded + failed == N; the
    succeeded, failed, attempts, status and error counters equal to the records; `avg_latency_ms` equal to the
    mean recomputed from the records (within 0.01 ms); `finished_at` set and the completion published
    `published` times (the batch's `completions` counter); the queue empty, no
    `arq:in-progress:*` key, and no open job left in the batch's job table."""
    r = sync_redis(redis_url)
    try:
        # The commit that completes a batch runs inside the job; arq removes the job from the queue just after.
        settled = wait_until(lambda: r.zcard(QUEUE) == 0 and not in_progress_keys(r), settle_s, interval=0.1)
        stats, records, depth = run(_read_batch(redis_url, batch))
        assert stats.complete and stats.finished_at is not None and stats.state == "complete", stats
        assert stats.total == n and stats.done == n and stats.pending == 0, stats
        assert stats.succeeded + stats.failed == n, stats
        assert len(records) == n, (len(records), n)
        assert len({record.url for record in records}) == n, "two records for one URL"
        assert r.hlen(keys.batch_results(batch)) == n
        assert stats.succeeded == sum(record.ok for record in records), stats
        assert stats.failed == sum(not record.ok for record in records), stats
        assert stats.attempts == sum(record.attempts for record in records), stats
        assert stats.error_counts == dict(Counter(record.error for record in records if record.error)), stats
        assert stats.status_counts == dict(Counter(str(r.status) for r in records if r.status is not None)), stats
        latencies = [record.latency_ms for record in records if record.latency_ms is not None]
        if latencies:
            assert stats.avg_latency_ms == pytest.approx(sum(latencies) / len(latencies), abs=0.01)
        else:
            assert stats.avg_latency_ms is None
        if published is not None:
            done_times = publishes(r, batch)
            assert done_times == published, f"completion published {done_times} times, expected {published}"
        assert settled, f"queue holds {r.zrange(QUEUE, 0, 20)}; in progress: {in_progress_keys(r)[:20]}"
        assert r.hlen(keys.batch_jobs(batch)) == 0, f"open jobs: {r.hgetall(keys.batch_jobs(batch))}"
        assert depth == {"ready": 0, "deferred": 0, "in_progress": 0, "total": 0}, depth
        return BatchCheck(stats, records)
    finally:
        r.close()


# ---------------------------------------------------------------- worker processes
class Workers:
    """`count` worker processes through the real CLI (`crawlq worker`), or `command` if given.

    With `supervise=True` a thread restarts any worker that exits, as compose's `restart: unless-stopped`
    or a Kubernetes Deployment would, and records `(slot, exit code)` in `exits`. Leaving the block sends
    SIGCONT and SIGTERM to every worker and waits for it (SIGKILL after 20 s).
    """

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        count: int,
        *extra: str,
        supervise: bool = False,
        command: Sequence[str] | None = None,
        name: str = "worker",
    ) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.argv = [*(command or WORKER_COMMAND), *extra]
        self.supervise = supervise
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exits: list[tuple[int, int]] = []
        self.starts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = count

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        self.starts += 1
        return spawn(self.argv, self.env, self.log_dir / f"{self.name}-{slot}.log", cwd="/")

    def __enter__(self) -> Workers:
        self.procs = [self._spawn(slot) for slot in range(self._count)]
        if self.supervise:
            self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for slot, proc in enumerate(self.procs):
                    code = proc.poll()
                    if code is not None and not self._stop.is_set():
                        self.exits.append((slot, code))
                        self.procs[slot] = self._spawn(slot)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [proc.pid for proc in self.procs]

    def signal(self, slot: int, signum: int) -> int:
        with self._lock:
            pid = self.procs[slot].pid
            os.kill(pid, signum)
        return pid

    def kill_random(self, rng: random.Random) -> int:
        return self.signal(rng.randrange(len(self.procs)), signal.SIGKILL)

    def stop_supervising(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_supervising()
        stop(self.procs)


def poison_worker_main() -> None:
    """A test-only worker entry point: `crawlq worker` whose process dies (`os._exit(1)`) whenever it is
    about to fetch a URL containing "poison", however often it is retried."""
    from crawlq_cli.main import cli
    from workers import fetcher

    original = fetcher.Fetcher.fetch

    async def fetch(self: fetcher.Fetcher, url: str, **options: Any) -> fetcher.Attempt:
        if "poison" in url:
            print(f"poison: dying on {url}", file=sys.stderr, flush=True)
            os._exit(1)
        return await original(self, url, **options)

    fetcher.Fetcher.fetch = fetch  # type: ignore[method-assign]
    cli(["worker", *sys.argv[1:]], prog_name="crawlq")


# ---------------------------------------------------------------- a server that wants a password
class PasswordServer:
    """The embedded server binary started with `--requirepass`, on a free loopback port."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="crawlq-auth-"))
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PasswordServer:
        args = [
            find_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--requirepass", self.password,
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self._answers, 10), "the password-protected server did not start"
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"-NOAUTH")
        except OSError:
            return False

    def url(self, password: str | None) -> str:
        auth = f":{password}@" if password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
