"""`crawlq status` and `crawlq hosts` through the real CLI, with a real worker crawling a local site."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import redis as redis_sync

from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import cli_env, run_cli, wait_until, workers


@pytest.fixture
def env(redis_server: EmbeddedServer) -> dict[str, str]:
    redis_sync.Redis.from_url(redis_server.url).flushdb()
    return cli_env(redis_server.url, per_host_concurrency=2, chunk_size=5)


def test_status_counts_urls_and_hosts_show_the_limit(
    env: dict[str, str], site: ThreadedTargetSite, tmp_path: Path
) -> None:
    urls = "\n".join(site.url(f"/delay?ms=600&n={i}") for i in range(30))
    submitted = run_cli(["submit", "-", "--batch", "slow", "--json"], env, stdin=urls)
    assert submitted.returncode == 0, submitted.stderr
    before = orjson.loads(run_cli(["status", "--json"], env).stdout)
    assert before["queue"]["urls"] == {"ready": 30, "deferred": 0, "in_flight": 0}
    assert before["queue"]["jobs"]["ready"] >= 1
    host = urlsplit(site.url("/")).netloc
    with workers(env, 1, tmp_path, "--concurrency", "10"):

        def busy() -> bool:
            listed = [orjson.loads(line) for line in run_cli(["hosts", "--json"], env).stdout.splitlines()]
            return any(h["host"] == host and h["in_flight"] == 2 and h["limit"] == 2 for h in listed)

        assert wait_until(busy, 30, interval=0.2)
        table = run_cli(["hosts"], env)
        assert host in table.stdout and "limit" in table.stdout
        beats = orjson.loads(run_cli(["status", "--json"], env).stdout)["workers"]
        assert len(beats) == 1 and beats[0]["pages_per_s_1m"] >= 0
        shown = run_cli(["status"], env, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert "URLs ready" in shown.stdout and "in flight" in shown.stdout
        assert host in shown.stdout and "slow" in shown.stdout
        waited = run_cli(["wait", "slow", "--timeout", "60"], env, timeout=90)
        assert waited.returncode == 0, waited.stderr
        assert "30/30 done (0 failed" in waited.stderr
    after = orjson.loads(run_cli(["status", "--json"], env).stdout)
    assert after["queue"]["urls"] == {"ready": 0, "deferred": 0, "in_flight": 0}
