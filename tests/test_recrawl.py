"""Conditional re-crawl: `--recrawl-of BATCH` sends the earlier validators; a 304, or a 200 with the
earlier content_sha256, is a success marked `unchanged`, counted in the batch's stats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crawlq_local.server import EmbeddedServer
from tests.helpers import cli_env, run_cli, workers
from tests.site import LAST_MODIFIED, KnownSite, serve

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def site() -> Iterator[KnownSite]:
    with serve(KnownSite()) as running:
        yield running


def _results(env: dict[str, str], batch: str) -> dict[str, dict[str, object]]:
    lines = run_cli(["results", batch], env).stdout.splitlines()
    return {str(r["url"]).rsplit("/", 1)[1]: r for r in map(orjson.loads, lines)}


def test_a_recrawl_counts_unchanged_pages(site: KnownSite, redis_server: EmbeddedServer, tmp_path: Path) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    env = cli_env(redis_server.url, robots_enabled=0)
    urls = "\n".join(f"{site.url}/v/{name}" for name in ("etag", "lm", "same", "changing"))
    with workers(env, 1, tmp_path):
        assert run_cli(["submit", "-", "--batch", "monday"], env, stdin=urls).returncode == 0
        assert run_cli(["wait", "monday", "--timeout", "40"], env, timeout=50).returncode == 0
        site.version = 2
        first_requests = len(site.seen)
        again = run_cli(["submit", "-", "--batch", "tuesday", "--recrawl-of", "monday"], env, stdin=urls)
        assert again.returncode == 0, again.stderr
        assert run_cli(["wait", "tuesday", "--timeout", "40"], env, timeout=50).returncode == 0
    sent = {seen.path: seen.headers for seen in site.seen[first_requests:]}
    assert sent["/v/etag"]["If-None-Match"] == '"etag-v1"' and "If-Modified-Since" not in sent["/v/etag"]
    assert sent["/v/lm"]["If-Modified-Since"] == LAST_MODIFIED
    assert "If-None-Match" not in sent["/v/same"] and "If-Modified-Since" not in sent["/v/same"]
    monday, tuesday = _results(env, "monday"), _results(env, "tuesday")
    assert not any(r["unchanged"] for r in monday.values())
    assert {name: r["unchanged"] for name, r in tuesday.items()} == {
        "etag": True, "lm": True, "same": True, "changing": False,
    }  # fmt: skip
    for name in ("etag", "lm"):  # a 304 keeps the earlier description, hash included
        assert tuesday[name]["status"] == 304 and tuesday[name]["ok"] is True
        assert tuesday[name]["content_sha256"] == monday[name]["content_sha256"] is not None
        assert tuesday[name]["title"] == monday[name]["title"]
    assert tuesday["changing"]["content_sha256"] != monday["changing"]["content_sha256"]
    stats = orjson.loads(run_cli(["stats", "tuesday", "--json"], env).stdout)
    assert stats["unchanged"] == 3 and stats["succeeded"] == 4 and stats["status_counts"] == {"200": 2, "304": 2}
    assert "unchanged    3" in run_cli(["stats", "tuesday"], env).stdout
    assert orjson.loads(run_cli(["stats", "monday", "--json"], env).stdout)["unchanged"] == 0
