"""Body storage: bodies in the directory store match their sha256 and come back out with `crawlq export`;
an unwritable store gives `storage` failures (one log line) and the batch still completes; Redis storage
keeps a compressed copy with its own TTL and cap."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crawlq.bodies import DirectoryStore, RedisBodyStore, StorageFailed, read_body
from crawlq.settings import Settings
from crawlq_local.server import EmbeddedServer
from tests.helpers import cli_env, run_cli, workers
from tests.site import KnownSite, serve

pytestmark = pytest.mark.timeout(90)
PAGES = ("echo", "v/same", "v/changing", "v/lm")


@pytest.fixture
def site() -> Iterator[KnownSite]:
    with serve(KnownSite()) as running:
        yield running


def _crawl(site: KnownSite, env: dict[str, str], batch: str, log_dir: Path) -> list[dict[str, object]]:
    with workers(env, 1, log_dir):
        urls = "\n".join(f"{site.url}/{name}" for name in PAGES)
        assert run_cli(["submit", "-", "--batch", batch], env, stdin=urls).returncode == 0
        waited = run_cli(["wait", batch, "--timeout", "40"], env, timeout=50)
        assert waited.returncode == 0, waited.stderr
    return [orjson.loads(line) for line in run_cli(["results", batch], env).stdout.splitlines()]


def test_bodies_in_the_directory_store_match_their_hash_and_export(
    site: KnownSite, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    store = tmp_path / "bodies"
    store.mkdir()
    env = cli_env(redis_server.url, robots_enabled=0, store_bodies=f"dir:{store}")
    records = _crawl(site, env, "stored", tmp_path)
    assert len(records) == len(PAGES) and all(r["ok"] for r in records)
    for record in records:
        sha = str(record["content_sha256"])
        assert record["body_ref"] == f"dir:{store}/{sha[:2]}/{sha}.gz"
        assert hashlib.sha256(gzip.decompress((store / sha[:2] / f"{sha}.gz").read_bytes())).hexdigest() == sha
    assert not list(store.rglob(".tmp-*"))  # every write was renamed into place
    exported = run_cli(["export", "stored", str(tmp_path / "out")], env)
    assert exported.returncode == 0 and f"wrote {len(PAGES)} records and {len(PAGES)} bodies" in exported.stderr
    for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines():
        row = orjson.loads(line)
        body = (tmp_path / "out" / row["body_file"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == row["content_sha256"]


def test_an_unwritable_store_fails_each_url_as_storage_and_the_batch_completes(
    site: KnownSite, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # root ignores permissions; a path under a file fails for real
    env = cli_env(redis_server.url, robots_enabled=0, store_bodies=f"dir:{blocker}/bodies")
    records = _crawl(site, env, "unwritable", tmp_path)
    assert sorted(str(r["error"]) for r in records) == ["storage"] * len(PAGES)
    assert all(r["status"] == 200 and r["attempts"] == 1 for r in records)  # final at once, not retried
    assert "Not a directory" in str(records[0]["message"])
    stats = orjson.loads(run_cli(["stats", "unwritable", "--json"], env).stdout)
    assert stats["complete"] and stats["error_counts"] == {"storage": len(PAGES)}
    log = (tmp_path / "worker-0.log").read_text()
    assert log.count("body storage failed") == 1  # one clear line, not one per URL


async def test_the_redis_store_compresses_caps_and_expires(settings: Settings, redis: object) -> None:
    store = RedisBodyStore(redis, ttl_s=60, max_bytes=200)  # type: ignore[arg-type]
    body = b"<p>hello</p>" * 100
    sha = hashlib.sha256(body).hexdigest()
    ref = await store.put(body, sha)
    assert ref == f"redis:crawlq:body:{sha}" and await read_body(ref, redis) == body  # type: ignore[arg-type]
    assert 0 < await redis.ttl(ref.removeprefix("redis:")) <= 60  # type: ignore[attr-defined]
    with pytest.raises(StorageFailed, match="above store_body_max_bytes 200"):
        await store.put(bytes(range(256)) * 10, "0" * 64)


async def test_a_missing_directory_is_a_storage_failure(tmp_path: Path) -> None:
    with pytest.raises(StorageFailed, match="No such file or directory"):
        await DirectoryStore(tmp_path / "gone" / "deeper").put(b"x", "ab" * 32)
