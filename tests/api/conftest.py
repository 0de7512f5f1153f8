"""API fixtures: the real app served by a real uvicorn server in a thread, against the suite's Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import redis as redis_sync
import uvicorn

from crawlq.settings import Settings
from crawlq_api.app import create_app
from crawlq_api.settings import ApiSettings
from crawlq_local.server import EmbeddedServer
from tests.helpers import cli_env

TOKEN = "test-token-full"
READ_TOKEN = "test-token-read"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def env(redis_server: EmbeddedServer) -> dict[str, str]:
    """Environment for worker processes; Redis flushed."""
    redis_sync.Redis.from_url(redis_server.url).flushdb()
    return cli_env(redis_server.url)


@pytest.fixture
def api_factory(settings: Settings, env: dict[str, str]) -> Iterator[Callable[..., httpx.Client]]:
    """Start an API with `ApiSettings` overrides; returns an httpx client on it carrying the full token."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            values: dict[str, Any] = {
                "token": TOKEN,
                "read_token": READ_TOKEN,
                "allowed_networks": ["127.0.0.0/8"],
                "follow_poll_s": 0.2,
            }
            values.update(overrides)
            base = stack.enter_context(running(create_app(settings, ApiSettings(_env_file=None, **values))))
            return stack.enter_context(httpx.Client(base_url=base, headers=AUTH, timeout=60))

        yield start


@pytest.fixture
def api(api_factory: Callable[..., httpx.Client]) -> httpx.Client:
    return api_factory()
