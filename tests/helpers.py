"""Test helpers: run the real CLI and real worker processes against the test session's server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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


def spawn(argv: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `argv` from `/` with its output appended to `log`."""
    with open(log, "ab") as handle:
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=handle, cwd="/")


def stop(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 20) -> None:
    """SIGCONT (in case a test stopped it) and SIGTERM every process still running, then wait for each
    (SIGKILL after `timeout_s`)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return spawn([*CRAWLQ, "worker", *extra], env, log)


@contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path, *extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(env, log_dir / f"worker-{i}.log", *extra) for i in range(count)]
    try:
        yield procs
    finally:
        stop(procs)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
