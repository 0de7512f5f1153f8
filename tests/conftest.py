"""Shared fixtures: a private Redis-protocol server on a free loopback port, clients flushed per test, the
demo target site, and the one builder of test settings (`make_settings`, with the suite's short timings in
`FAST`, which `tests/helpers.py::cli_env` also gives the processes it starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from crawlq.connection import connect
from crawlq.settings import Settings
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite

LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]  #: the loopback targets, not all private ranges

#: Short timings for crawls of local sites, in process (`settings`) and in worker processes (`cli_env`).
FAST: dict[str, Any] = dict(
    allowed_networks=LOOPBACK_NETWORKS,
    per_host_concurrency=50,
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    idle_poll_s=0.05,
    cooldown_base_s=0.05,
    cooldown_max_s=0.5,
)


def make_settings(**values: Any) -> Settings:
    """Settings from `values` and the defaults only: no `.env` file is read."""
    return Settings(**values, _env_file=None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedServer]:
    """One server for the session; tests that stop or restart a server start their own."""
    with EmbeddedServer() as server:
        yield server


@pytest.fixture
def settings(redis_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir("/")  # never read a developer's .env
    return make_settings(**FAST, redis_url=redis_server.url, robots_enabled=False)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await connect(settings)
    await pool.flushdb()
    yield pool
    await pool.aclose()


@pytest.fixture
def site() -> Iterator[ThreadedTargetSite]:
    """The demo target site on a free loopback port, in a thread (for tests that drive worker processes)."""
    with ThreadedTargetSite() as running:
        yield running
