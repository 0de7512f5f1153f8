"""Processes the bench starts and watches: the target site subprocess, /proc CPU and RSS readings,
peer subprocesses that answer with one JSON line, and on-demand installs of optional peers."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from crawlq_local.server import free_port

__all__ = [
    "ROOT",
    "Contention",
    "CpuMeter",
    "wait_quiet",
    "TargetProcess",
    "cpu_ms_per_page",
    "cpu_seconds",
    "ensure_package",
    "rss_bytes",
    "run_json",
]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]  #: the repository, so that `python -m bench.*` imports


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process from /proc/<pid>/stat (0.0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(slots=True)
class CpuMeter:
    """CPU seconds used by named groups of processes between `start()` and `stop()`."""

    groups: dict[str, list[int]]
    _before: dict[int, float] = field(default_factory=dict)
    used_s: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self._before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        return self

    def stop(self) -> dict[str, float]:
        for name, pids in self.groups.items():
            self.used_s[name] = round(sum(max(0.0, cpu_seconds(pid) - self._before[pid]) for pid in pids), 3)
        return self.used_s


def cpu_ms_per_page(cpu_s: dict[str, float], pages: int) -> dict[str, float]:
    """Table columns `<group>_cpu_ms_per_page` from CPU seconds per process group (workers, redis,
    producer, client...), set beside a part's wall-clock figures."""
    return {f"{group}_cpu_ms_per_page": round(1000 * seconds / max(1, pages), 4) for group, seconds in cpu_s.items()}


def machine_busy_s() -> float:
    """CPU seconds spent in user, nice and system mode by the whole machine since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / _TICKS_PER_S


def own_cpu_s(pids: list[int]) -> float:
    """This process and its reaped children (workers, servers, peer clients), plus live `pids`."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system + sum(map(cpu_seconds, pids))


@dataclass(slots=True)
class Contention:
    """How much CPU other programs on the machine used while a part ran: machine busy time minus the
    bench's own (itself, its reaped children and the live `pids`, i.e. the target site)."""

    pids: list[int]
    _machine: float = 0.0
    _own: float = 0.0
    _wall: float = 0.0

    def start(self) -> Contention:
        self._machine, self._own, self._wall = machine_busy_s(), own_cpu_s(self.pids), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        machine = machine_busy_s() - self._machine
        own = own_cpu_s(self.pids) - self._own
        foreign = max(0.0, machine - own)
        share = foreign / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        return {
            "machine_busy_s": round(machine, 2),
            "own_cpu_s": round(own, 2),  #: the part's whole CPU: bench, workers, Redis, clients, target, start-ups
            "foreign_cpu_s": round(foreign, 2),
            "foreign_share": round(share, 4),
        }


async def wait_quiet(max_wait_s: float, busy_share: float = 0.1, probe_s: float = 1.0) -> dict[str, float]:
    """Wait (at most `max_wait_s`) until other programs use under `busy_share` of the machine for `probe_s`."""
    waited = 0.0
    while True:
        before = machine_busy_s()
        await asyncio.sleep(probe_s)
        share = (machine_busy_s() - before) / (probe_s * (os.cpu_count() or 1))
        if share < busy_share or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "busy_share_before": round(share, 3)}
        waited += probe_s


class TargetProcess:
    """`python -m crawlq_local.target` on a free loopback port, in its own process (its own GIL)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 15.0) -> None:
        command = [sys.executable, "-m", "crawlq_local.target", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the target site exited at start (code {self.process.returncode})")
            try:
                self.reset()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the target site did not answer on port {self.port} within {timeout_s:g} s")

    def reset(self) -> None:
        """Clear the site's counters (GET /__reset), so its memory does not grow over the run."""
        with urllib.request.urlopen(f"{self.base}/__reset", timeout=2) as response:
            response.read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/__stats", timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
        data.pop("key_times", None)
        return data

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> TargetProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def run_json(command: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a peer subprocess that prints one JSON object as its last stdout line; raise on failure."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{' '.join(command[:4])} did not finish within {timeout_s:g} s") from None
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command[:4])} exited {process.returncode}: {' | '.join(tail)}")
    lines = stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def ensure_package(module: str, requirement: str, *, install: bool) -> bool:
    """True if `module` imports; otherwise pip-install `requirement` (when `install`) and try again."""
    if importlib.util.find_spec(module) is not None:
        return True
    if not install:
        return False
    print(f"bench: installing {requirement} ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", requirement], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        print(f"bench: could not install {requirement}: {done.stderr.strip()[-300:]}", flush=True)
        return False
    importlib.invalidate_caches()
    return importlib.util.find_spec(module) is not None
