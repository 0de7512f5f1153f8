"""GET /hosts, GET /totals and the dashboard's unauthenticated page and assets, against real workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from crawlq.settings import HostRule, Settings
from crawlq_local.target import ThreadedTargetSite
from producer.client import Client
from producer.cluster import configured_host_limits
from tests.helpers import wait_until, workers


def test_hosts_show_requests_in_flight_against_the_limit(
    api_factory: Callable[..., httpx.Client],
    settings: Settings,
    env: dict[str, str],
    site: ThreadedTargetSite,
    tmp_path: Path,
) -> None:
    host = urlsplit(site.url("/")).netloc
    api = api_factory()
    # the API reads limits from its own settings: the suite's settings give every host 50
    env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": "2"}
    batch = api.post("/batches", json={"urls": [site.url(f"/delay/1?n={i}") for i in range(6)]}).json()["batch"]
    seen: list[Any] = []
    with workers(env, 1, tmp_path, "--concurrency", "10"):

        def busy() -> bool:
            listed = api.get("/hosts").json()
            seen.append(listed)
            return any(entry["host"] == host and entry["in_flight"] == 2 for entry in listed["hosts"])

        assert wait_until(busy, 30, interval=0.1), seen[-3:]
        assert all(e["in_flight"] <= 2 for listed in seen for e in listed["hosts"]), "the gate let more than 2 in"
        assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["complete"], 60, interval=0.2)
    after = api.get("/hosts").json()
    assert all(entry["in_flight"] == 0 for entry in after["hosts"]), after


def test_configured_limits_follow_host_rules(settings: Settings) -> None:
    ruled = settings.model_copy(
        update={
            "host_rules": [HostRule(pattern="*.example.com", concurrency=7, delay_s=0.5)],
            "per_host_concurrency": 3,
        }
    )
    assert configured_host_limits(ruled, "a.example.com") == (7, 0.5)
    assert configured_host_limits(ruled, "a.example.com:8080") == (7, 0.5)
    assert configured_host_limits(ruled, "example.org") == (3, ruled.per_host_delay_s)


async def test_hosts_report_cooldown_left_from_the_gate_state(api: httpx.Client, settings: Settings) -> None:
    async with await Client.connect(settings) as client:
        seconds, _ = await client.redis.time()
        await client.redis.hset(
            "crawlq:host:slow.test", mapping={"cooldown_until": (seconds + 30) * 1000, "penalty_ms": 4000}
        )
        hosts = await client.hosts()
    assert [(h.host, h.in_flight) for h in hosts] == [("slow.test", 0)]
    assert 25 < hosts[0].cooldown_s <= 30 and hosts[0].penalty_ms == 4000
    listed = api.get("/hosts").json()
    assert listed["in_cooldown"] == 1 and listed["hosts"][0]["host"] == "slow.test"


def test_totals_histogram_counts_every_result(
    api: httpx.Client, env: dict[str, str], site: ThreadedTargetSite, tmp_path: Path
) -> None:
    urls = [site.url(f"/delay?ms={ms}&n={i}") for i, ms in enumerate([0, 0, 0, 30, 30, 300])]
    batch = api.post("/batches", json={"urls": urls, "wait_s": 0}).json()["batch"]
    with workers(env, 1, tmp_path):
        assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["complete"], 60, interval=0.2)
    totals = api.get("/totals").json()
    assert totals["done"] == 6 and totals["failed"] == 0
    counts = [bucket["count"] for bucket in totals["latency"]]
    assert sum(counts) == 6
    bounds = [bucket["le_ms"] for bucket in totals["latency"]]
    assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])
    slow = sum(b["count"] for b in totals["latency"] if b["le_ms"] is None or b["le_ms"] > 250)
    assert slow >= 1  # the 300 ms page


def test_dashboard_page_and_assets_need_no_token(api: httpx.Client) -> None:
    with httpx.Client(base_url=str(api.base_url)) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/ui/dashboard.js" in page.text and "http" not in page.text.replace("http-equiv", "")
        for asset in ("dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
            assert anonymous.get(f"/ui/{asset}").status_code == 200, asset
        assert anonymous.get("/ui/../app.py").status_code == 404
        assert anonymous.get("/ui/secret").status_code == 404
        assert anonymous.get("/hosts").status_code == 401
        assert anonymous.get("/totals").status_code == 401
