"""Test helpers: run the real CLI and real worker processes against the test session's server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from crawlq import keys
from crawlq_local.processes import WORKER_COMMAND, spawn, stop
from tests.conftest import FAST

CRAWLQ = [sys.executable, "-m", "crawlq_cli"]


def cli_env(redis_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
    values = {**FAST, "redis_url": redis_url, "reconcile_interval_s": 1, "heartbeat_interval_s": 1, **settings}
    env.update({f"CRAWLQ_{name.upper()}": _env_value(value) for name, value in values.items()})
    return env


def _env_value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def run_cli(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CRAWLQ + args, env=env, input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/")


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A worker process run from `/` (no `.env` file is read), its output appended to `log`."""
    return spawn([*WORKER_COMMAND, *extra], env, log, cwd="/")


@contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path, *extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(env, log_dir / f"worker-{i}.log", *extra) for i in range(count)]
    try:
        yield procs
    finally:
        stop(procs)


def beating(env: dict[str, str], procs: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> bool:
    """Wait until each worker process in `procs` has published its heartbeat (its id is `host:pid:...`): it has
    started and polls. A fixed sleep is not enough on a loaded machine."""
    r = redis.Redis.from_url(env["CRAWLQ_REDIS_URL"])

    def beats(pid: int) -> bool:
        return any(True for _ in r.scan_iter(match=keys.worker(f"*:{pid}:*"), count=1000))

    try:
        return wait_until(lambda: all(beats(proc.pid) for proc in procs), timeout_s, interval=0.1)
    finally:
        r.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
