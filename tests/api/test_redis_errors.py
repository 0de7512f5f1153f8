"""How the API names a Redis error: a command Redis refused is not a lost connection, and out of memory says so."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis as redis_sync

from crawlq import keys
from crawlq.settings import Settings
from crawlq_api.app import create_app
from crawlq_api.settings import ApiSettings
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.api.conftest import AUTH, READ_TOKEN, TOKEN, running


def test_a_refused_command_is_named_with_its_reply(
    api_factory: Callable[..., httpx.Client], settings: Settings
) -> None:
    api = api_factory()
    redis = redis_sync.Redis.from_url(settings.redis_url)
    try:
        redis.set(keys.STATS_ALL, "not a hash")  # a key of the wrong type: Redis answers WRONGTYPE
        reply = api.get("/totals")
    finally:
        redis.delete(keys.STATS_ALL)
        redis.close()
    assert reply.status_code == 500, reply.text
    detail = reply.json()["detail"]
    assert "refused a command: WRONGTYPE" in detail and "lost Redis" not in detail, detail


def test_out_of_memory_is_named_not_lost(settings: Settings, site: ThreadedTargetSite) -> None:
    """maxmemory 2mb, noeviction, filled: a submit gets 503 saying Redis is out of memory; reads still answer."""
    with EmbeddedServer(extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]) as server:
        redis = redis_sync.Redis.from_url(server.url)
        try:
            for number in range(100):  # until Redis refuses a write
                try:
                    redis.set(f"filler:{number}", b"x" * 100_000)
                except redis_sync.exceptions.OutOfMemoryError:
                    break
            else:
                raise AssertionError("Redis took 10 MB under maxmemory 2mb")
            api_settings = ApiSettings(
                _env_file=None, token=TOKEN, read_token=READ_TOKEN, allowed_networks=["127.0.0.0/8"]
            )
            app = create_app(settings.model_copy(update={"redis_url": server.url}), api_settings)
            with running(app) as base, httpx.Client(base_url=base, headers=AUTH, timeout=30) as api:
                submitted = api.post("/batches", json={"urls": [site.url(f"/page/{i}") for i in range(5)]})
                queue = api.get("/queue")
        finally:
            redis.close()
    assert submitted.status_code == 503, submitted.text
    detail = submitted.json()["detail"]
    assert "is out of memory" in detail and "lost Redis" not in detail, detail
    assert queue.status_code == 200, queue.text
