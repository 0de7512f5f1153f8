"""Shared fixtures: a private Redis-protocol server on a free loopback port, and clients flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from arq.connections import ArqRedis

from crawlq.connection import connect
from crawlq.settings import Settings
from crawlq_local.server import EmbeddedServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedServer]:
    """One server for the session; tests that stop or restart a server start their own."""
    with EmbeddedServer() as server:
        yield server


@pytest.fixture
def settings(redis_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir("/")  # never read a developer's .env
    return Settings(
        redis_url=redis_server.url,
        allowed_networks=["127.0.0.0/8", "::1/128"],  # the loopback targets, not all private ranges
        robots_enabled=False,
        per_host_concurrency=50,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        idle_poll_s=0.05,
        cooldown_base_s=0.05,
        cooldown_max_s=0.5,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await connect(settings)
    await pool.flushdb()
    yield pool
    await pool.aclose()
