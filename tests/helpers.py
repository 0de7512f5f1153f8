"""Test helpers: run the real CLI and real worker processes against the test session's server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CRAWLQ = [sys.executable, "-m", "crawlq_cli"]


def cli_env(redis_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
    env.update(
        CRAWLQ_REDIS_URL=redis_url,
        CRAWLQ_ALLOWED_NETWORKS="127.0.0.0/8,::1/128",  # the loopback targets, not all private ranges
        CRAWLQ_PER_HOST_CONCURRENCY="50",
        CRAWLQ_BACKOFF_BASE_S="0.05",
        CRAWLQ_BACKOFF_MAX_S="0.3",
        CRAWLQ_IDLE_POLL_S="0.05",
        CRAWLQ_RECONCILE_INTERVAL_S="1",
        CRAWLQ_HEARTBEAT_INTERVAL_S="1",
        CRAWLQ_COOLDOWN_BASE_S="0.05",
        CRAWLQ_COOLDOWN_MAX_S="0.5",
    )
    env.update({f"CRAWLQ_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def run_cli(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CRAWLQ + args, env=env, input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/")


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")
    return subprocess.Popen(CRAWLQ + ["worker", *extra], env=env, stdout=handle, stderr=handle, cwd="/")


@contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path, *extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(env, log_dir / f"worker-{i}.log", *extra) for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
