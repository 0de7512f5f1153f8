"""Starting and stopping worker processes: the one spawn/stop pair that `LocalCluster` (hence `crawlq crawl`,
`crawlq demo` and the benchmark), the tests and the fault tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["WORKER_COMMAND", "spawn", "stop"]

#: a crawlq worker, as a process (`crawlq worker`); nothing here imports `workers`
WORKER_COMMAND = (sys.executable, "-m", "crawlq_cli", "worker")


def spawn(
    argv: Sequence[str], env: Mapping[str, str], log: Path | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with `env`; its output is appended to `log` (discarded when None).

    :param cwd: where it runs (the tests use `/`, so that no `.env` file is read)."""
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    handle: IO[bytes]
    with open(log, "ab") as handle:
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=handle, cwd=cwd)


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 20) -> None:
    """SIGCONT (in case one was stopped) and SIGTERM every process still running, so that it drains, then wait
    for each; one still running `timeout_s` later is killed."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
