"""Host rules set at run time: `crawlq hosts set` lowers a running worker's per-host limit without a restart,
`crawlq hosts unset` removes the rule. A real worker crawls a slow local site."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as redis_sync

from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import cli_env, run_cli, wait_until, workers


@pytest.fixture
def env(redis_server: EmbeddedServer) -> dict[str, str]:
    redis_sync.Redis.from_url(redis_server.url).flushdb()
    return cli_env(redis_server.url, per_host_concurrency=4)


def test_a_rule_set_while_the_worker_runs_lowers_the_hosts_limit(
    env: dict[str, str], site: ThreadedTargetSite, tmp_path: Path
) -> None:
    urls = "\n".join(site.url(f"/delay?ms=300&n={i}") for i in range(200))
    with workers(env, 1, tmp_path, "--concurrency", "8"):
        submitted = run_cli(["submit", "-", "--batch", "rules"], env, stdin=urls)
        assert submitted.returncode == 0, submitted.stderr
        assert wait_until(lambda: site.stats.max_in_flight >= 4, 30, interval=0.05), site.stats.max_in_flight
        assert site.stats.max_in_flight == 4  # the environment's per-host limit

        changed = run_cli(["hosts", "set", "127.0.0.1*", "--concurrency", "1"], env)
        assert changed.returncode == 0, changed.stderr
        assert "127.0.0.1*" in changed.stdout
        time.sleep(1.5)  # the fetches under way end; the workers read the rule
        site.stats.reset()
        time.sleep(4.0)
        assert site.stats.max_in_flight == 1, site.stats.max_in_flight

        listed = run_cli(["hosts"], {**env, "COLUMNS": "200"})
        assert "run-time rule 127.0.0.1*: concurrency 1" in listed.stdout, listed.stdout

        removed = run_cli(["hosts", "unset", "127.0.0.1*"], env)
        assert removed.returncode == 0 and "removed" in removed.stdout
        site.stats.reset()
        assert wait_until(lambda: site.stats.max_in_flight >= 2, 10, interval=0.05)  # back to the env's 4
        run_cli(["cancel", "rules"], env)

    missing = run_cli(["hosts", "unset", "127.0.0.1*"], env)
    assert missing.returncode == 1 and "no run-time host rule" in missing.stdout
    empty = run_cli(["hosts", "set", "x"], env)
    assert empty.returncode != 0 and "--concurrency" in empty.stderr and "Traceback" not in empty.stderr
