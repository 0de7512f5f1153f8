"""Link following end to end: real worker processes crawl a local site of known shape (tests/linksite.py)
from its root; each scope and depth reaches exactly the expected URLs, each fetched once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crawlq_local.server import EmbeddedServer
from tests.helpers import cli_env, run_cli, workers
from tests.linksite import LinkSites, serve_sites

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def sites() -> Iterator[LinkSites]:
    with serve_sites() as running:
        yield running


def _crawl(env: dict[str, str], sites: LinkSites, batch: str, *flags: str) -> tuple[set[str], dict[str, object]]:
    for server in (sites.main, sites.sibling, sites.far):
        server.requests.clear()
    submitted = run_cli(["submit", "-", "--batch", batch, "--follow", *flags], env, stdin=f"{sites.main.url}/\n")
    assert submitted.returncode == 0, submitted.stderr
    waited = run_cli(["wait", batch, "--timeout", "60"], env, timeout=70)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    records = [orjson.loads(line) for line in run_cli(["results", batch], env).stdout.splitlines()]
    urls = [str(record["url"]) for record in records]
    assert len(urls) == len(set(urls)), "a URL recorded twice"
    assert all(record["ok"] for record in records), [r for r in records if not r["ok"]]
    fetched = {server.url + path: count for server in (sites.main, sites.sibling, sites.far)
               for path, count in server.counts().items()}  # fmt: skip
    assert fetched == dict.fromkeys(urls, 1), "every URL of the batch fetched exactly once, and nothing else"
    stats = orjson.loads(run_cli(["stats", batch, "--json"], env).stdout)
    return set(urls), stats


def test_each_scope_and_depth_reaches_exactly_its_urls(
    sites: LinkSites, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    env = cli_env(redis_server.url, chunk_size=2)
    main = sites.main.url
    with workers(env, 2, tmp_path):
        for depth in (0, 1, 2, 5):
            urls, stats = _crawl(env, sites, f"host-{depth}", "--max-depth", str(depth))
            assert urls == sites.expected("same-host", depth), depth
            assert stats["total"] == stats["done"] == len(urls) and stats["discovered"] == len(urls) - 1
        assert stats["depth_counts"] == {"0": 1, "1": 2, "2": 3, "3": 2, "4": 1, "5": 1}
        urls, stats = _crawl(env, sites, "domain", "--max-depth", "2", "--scope", "same-domain")
        assert urls == sites.expected("same-domain", 2)
        assert stats["depth_counts"] == {"0": 1, "1": 3, "2": 4}
        urls, _ = _crawl(env, sites, "regex", "--max-depth", "2", "--scope", r"/(a|far)(/|$)")
        assert urls == {f"{main}/", f"{main}/a", f"{sites.far.url}/far", f"{main}/a/1", f"{main}/a/2"}
        urls, stats = _crawl(env, sites, "bounded", "--max-depth", "5", "--max-pages", "4")
        assert len(urls) == 4 and stats["total"] == 4 and stats["discovered"] == 3
        assert urls <= sites.expected("same-host", 5)
    text = run_cli(["stats", "host-5"], env).stdout
    assert "discovered   9 by following links (URLs by depth: 0: 1, 1: 2, 2: 3, 3: 2, 4: 1, 5: 1)" in text


def test_flags_of_following_need_follow(redis_server: EmbeddedServer) -> None:
    env = cli_env(redis_server.url)
    alone = run_cli(["submit", "-", "--max-depth", "3"], env, stdin="http://127.0.0.1:9/\n")
    assert alone.returncode == 2 and "go with --follow" in alone.stderr and "Traceback" not in alone.stderr
    bad = run_cli(["submit", "-", "--follow", "--scope", "(unclosed"], env, stdin="http://127.0.0.1:9/\n")
    assert bad.returncode == 2 and "is not a regular expression" in bad.stderr and "Traceback" not in bad.stderr
