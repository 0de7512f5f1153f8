"""The API's allow-list reaches the workers: a batch submitted through the API is fetched under the API's
address rules (`CRAWLQ_API_ALLOWED_NETWORKS`), whatever the workers allow, on every connection.

The submit-time screen is made to miss the name (`localhost` does not resolve when the API looks it up,
as a name that is re-pointed after the check would), so only the workers' enforcement stands between
the batch and the loopback site.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from crawlq.settings import Settings
from crawlq_api.app import create_app
from crawlq_api.settings import ApiSettings
from crawlq_local.target import ThreadedTargetSite
from tests.api.conftest import AUTH, TOKEN, running
from tests.helpers import workers


async def not_yet_resolvable(host: str) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve yet")


def crawl_through_api(settings: Settings, allowed: list[str], urls: list[str], env: dict[str, str], logs: Path) -> Any:
    app = create_app(settings, ApiSettings(_env_file=None, token=TOKEN, allowed_networks=allowed))
    app.state.crawlq.guard.lookup = not_yet_resolvable
    with running(app) as base, httpx.Client(base_url=base, headers=AUTH, timeout=60) as api:
        submitted = api.post("/batches", json={"urls": urls}).json()
        assert submitted["queued"] == len(urls), submitted
        with workers(env, 1, logs):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                detail = api.get(f"/batches/{submitted['batch']}").json()
                if detail["stats"]["complete"]:
                    break
                time.sleep(0.2)
        return api.get(f"/batches/{submitted['batch']}/results").text


def test_api_batches_are_fetched_under_the_apis_allow_list(
    settings: Settings, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    assert "127.0.0.0/8" in env["CRAWLQ_ALLOWED_NETWORKS"]  # the workers themselves allow loopback
    urls = [f"http://localhost:{site.port}/page/{i}" for i in range(3)] + [f"http://localhost:{site.port}/ok"]
    blocked = [orjson.loads(line) for line in crawl_through_api(settings, [], urls, env, tmp_path).splitlines()]
    assert len(blocked) == len(urls)
    assert all(r["error"] == "blocked_address" for r in blocked), blocked
    assert all("CRAWLQ_API_ALLOWED_NETWORKS" in r["message"] for r in blocked), blocked
    assert site.stats.total == 0  # not one request reached the site, robots.txt included

    fetched = [
        orjson.loads(line) for line in crawl_through_api(settings, ["127.0.0.0/8"], urls, env, tmp_path).splitlines()
    ]
    assert len(fetched) == len(urls) and all(r["ok"] for r in fetched), fetched
    assert site.stats.hits["/ok"] == 1
