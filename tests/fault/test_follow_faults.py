"""Link following under a SIGKILL: a worker killed mid-crawl loses no link and adds none twice; every URL
of the generated tree (tests/linksite.py) is recorded exactly once and the batch completes once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from crawlq import keys
from crawlq_local.server import EmbeddedServer
from tests.fault.conftest import Workers, assert_exactly_once, counter, fault_env, sync_redis, wait_complete
from tests.helpers import run_cli, wait_until
from tests.linksite import GRID_DEPTH, grid_paths, serve_sites


@pytest.mark.timeout(150)
def test_sigkill_mid_crawl_keeps_every_link_once(server: EmbeddedServer, tmp_path: Path) -> None:
    batch = "follow-kill"
    env = fault_env(server.url, chunk_size=4)
    with serve_sites() as sites:
        expected = {sites.main.url + path for path in grid_paths()}
        r = sync_redis(server.url)
        with Workers(env, tmp_path, 2, "--concurrency", "3") as pool:
            flags = ["--follow", "--max-depth", str(GRID_DEPTH)]
            submitted = run_cli(["submit", "-", "--batch", batch, *flags], env, stdin=f"{sites.main.url}/g\n")
            assert submitted.returncode == 0, submitted.stderr
            assert wait_until(lambda: counter(r, batch, "done") >= 15, 40)
            pool.signal(0, signal.SIGKILL)
            done_at_kill = counter(r, batch, "done")
            wait_complete(r, batch, 60, tmp_path)
        check = assert_exactly_once(server.url, batch, len(expected))
        assert {record.url for record in check.records} == expected
        assert all(record.ok for record in check.records)
        assert check.stats.discovered == len(expected) - 1
        assert check.stats.depth_counts == {str(d): 4**d for d in range(GRID_DEPTH + 1)}
        assert r.scard(keys.batch_parents(batch)) == sum(4**d for d in range(GRID_DEPTH))  # pages with links
        assert done_at_kill < len(expected), "the kill landed after the crawl"
        refetched = sum(count - 1 for count in sites.main.counts().values())
        print(f"\n[follow] SIGKILL at done={done_at_kill}/{len(expected)}; pages fetched twice: {refetched}")
