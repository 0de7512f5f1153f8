"""A worker whose fetches wait on slow servers must not spin: real worker process, real slow local server.

The bound is generous (a fifth of a core); a spinning worker uses a whole one (issue 9, section 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import cli_env, run_cli, wait_until, workers

MAX_CORE_SHARE = 0.20  #: of one core, over the measured span
MEASURE_S = 3.0
SLOW_S = 12  #: the server answers after this: every fetch is still in flight while we measure
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


@pytest.fixture
def env(redis_server: EmbeddedServer) -> dict[str, str]:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    return cli_env(redis_server.url, idle_poll_s=0.25, shutdown_grace_s=1)


def core_share_while_waiting(pid: int) -> tuple[float, float]:
    """(CPU seconds, share of one core) used by `pid` over `MEASURE_S` of wall time."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(MEASURE_S)
    used_s = cpu_seconds(pid) - cpu_before
    return used_s, used_s / (time.monotonic() - wall_before)


@pytest.mark.parametrize(
    ("urls", "per_host", "in_flight"),
    [
        pytest.param(42, 50, 40, id="fetches-in-flight"),  # 40+ fetches wait for their answers
        pytest.param(200, 2, 2, id="host-full"),  # 2 fetches in flight, 198 URLs wait for the host's slots
    ],
)
def test_a_worker_waiting_on_slow_fetches_does_not_spin(
    site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path, urls: int, per_host: int, in_flight: int
) -> None:
    env["CRAWLQ_PER_HOST_CONCURRENCY"] = str(per_host)
    lines = "".join(f"{site.url(f'/delay/{SLOW_S}?i={i}')}\n" for i in range(urls))
    with workers(env, 1, tmp_path, "--concurrency", str(urls)) as (worker,):
        submitted = run_cli(["submit", "-", "--batch", "slow"], env, stdin=lines)
        assert submitted.returncode == 0, submitted.stderr
        assert wait_until(lambda: site.stats.in_flight >= in_flight, timeout=15), site.stats.in_flight
        time.sleep(0.5)  # past the first commit window (FLUSH_S), where the old loop began to spin
        used_s, share = core_share_while_waiting(worker.pid)
        assert site.stats.in_flight >= in_flight  # still waiting: we measured the wait, not the work
        assert worker.poll() is None
    assert share < MAX_CORE_SHARE, f"the waiting worker used {used_s:.2f} s of CPU in {MEASURE_S:g} s"


def test_a_worker_process_freezes_its_start_up_objects_and_collects_young_ones_less_often() -> None:
    """`tune_gc` (called by `run_worker` before the worker runs): start-up objects leave the collector's
    sight and the young generation is collected every `GC_YOUNG_THRESHOLD` allocations."""
    script = (
        "import gc\nfrom workers.run import GC_YOUNG_THRESHOLD, tune_gc\n"
        "assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] != GC_YOUNG_THRESHOLD\n"
        "tune_gc()\nprint(gc.get_freeze_count(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    frozen, threshold_set = done.stdout.split()
    assert int(frozen) > 1000 and threshold_set == "True"
