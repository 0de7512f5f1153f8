"""GET /hosts, GET /totals and the dashboard's unauthenticated page and assets, against real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis as redis_sync

from crawlq import keys
from crawlq.settings import HostRule, Settings
from crawlq_local.target import ThreadedTargetSite
from producer.client import Client
from producer.cluster import configured_host_limits
from tests.api.conftest import READ_TOKEN
from tests.api.test_metrics import samples
from tests.helpers import run_cli, wait_until, workers


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
    """A host has the three keys the gate keeps (state hash, leases zset, waiters set) while URLs wait for it:
    each view lists the host once and reads each key as what it is."""
    async with await Client.connect(settings) as client:
        seconds, _ = await client.redis.time()
        await client.redis.hset(
            keys.host_state("slow.test:80"), mapping={"cooldown_until": (seconds + 30) * 1000, "penalty_ms": 4000}
        )
        await client.redis.zadd(keys.host_leases("slow.test:80"), {"w1:1": (seconds + 60) * 1000})
        await client.redis.sadd(keys.host_waiters("slow.test:80"), keys.gate_wake("w2"))
        await client.redis.zadd(keys.host_leases("busy.test:80"), {"w1:2": (seconds + 60) * 1000})
        await client.redis.sadd(keys.host_waiters("busy.test:80"), keys.gate_wake("w2"))
        hosts = await client.hosts()
    assert [(h.host, h.in_flight) for h in hosts] == [("slow.test:80", 1), ("busy.test:80", 1)]
    assert 25 < hosts[0].cooldown_s <= 30 and hosts[0].penalty_ms == 4000
    listed = api.get("/hosts")
    assert listed.status_code == 200, listed.text
    assert listed.json()["in_cooldown"] == 1 and listed.json()["total"] == 2
    assert samples(api)[("crawlq_hosts_in_cooldown", ())] == 1


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


def test_host_rules_set_over_http_reach_a_running_worker(
    api_factory: Callable[..., httpx.Client],
    env: dict[str, str],
    site: ThreadedTargetSite,
    tmp_path: Path,
) -> None:
    """PUT /hosts/rules/{pattern} lowers a running worker's per-host limit, GET lists it, DELETE removes it;
    a rule without values, a bad pattern and an unknown pattern get a clear answer."""
    api = api_factory()
    env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": "4"}
    urls = [site.url(f"/delay?ms=300&n={i}") for i in range(300)]
    batch = api.post("/batches", json={"urls": urls}).json()["batch"]
    with workers(env, 1, tmp_path, "--concurrency", "8"):
        assert wait_until(lambda: site.stats.max_in_flight >= 4, 30, interval=0.05), site.stats.max_in_flight
        put = api.put("/hosts/rules/127.0.0.1*", json={"concurrency": 1})
        assert put.status_code == 200, put.text
        assert put.json() == {"pattern": "127.0.0.1*", "concurrency": 1, "delay_s": None}
        assert api.get("/hosts/rules").json() == {"rules": [put.json()]}
        time.sleep(1.5)  # the fetches under way end; the worker reads the rule
        site.stats.reset()
        time.sleep(3.0)
        assert site.stats.max_in_flight == 1, site.stats.max_in_flight
        limits = {entry["host"]: entry["limit"] for entry in api.get("/hosts").json()["hosts"]}
        assert limits.get(urlsplit(site.url("/")).netloc) == 1, limits

        deleted = api.delete("/hosts/rules/127.0.0.1*")
        assert deleted.status_code == 200 and deleted.json()["concurrency"] == 1
        site.stats.reset()
        assert wait_until(lambda: site.stats.max_in_flight >= 2, 10, interval=0.05)  # back to the env's 4
        api.post(f"/batches/{batch}/cancel")
    assert api.get("/hosts/rules").json() == {"rules": []}
    missing = api.delete("/hosts/rules/127.0.0.1*")
    assert missing.status_code == 404 and "no run-time host rule" in missing.text
    empty = api.put("/hosts/rules/x", json={})
    assert empty.status_code == 422 and "concurrency" in empty.text
    assert api.put("/hosts/rules/x", json={"concurrency": 0}).status_code == 422
    assert api.put("/hosts/rules/x", json={"delay_s": 1, "extra": 1}).status_code == 422
    assert api.put("/hosts/rules/a%20b", json={"delay_s": 1}).status_code == 422
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert api.get("/hosts/rules", headers=reader).status_code == 200
    assert api.put("/hosts/rules/x", json={"delay_s": 1}, headers=reader).status_code == 401  # needs the full token


def test_every_read_view_answers_while_urls_wait_for_a_full_host(
    api_factory: Callable[..., httpx.Client],
    settings: Settings,
    env: dict[str, str],
    site: ThreadedTargetSite,
    tmp_path: Path,
) -> None:
    """The shape of most real crawls: two workers, one slot per host, slow pages, URLs waiting for a full
    host. The gate's waiters set comes and goes with each hand-over of the slot, so one is also written for
    a parked host (as gate.lua writes it, with a lease held). Every read view of the API and the CLI
    answers, each of its sources up, and lists the parked host once."""
    api = api_factory()
    env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": "1"}
    urls = [site.url(f"/delay?ms=400&n={i}") for i in range(12)]
    batch = api.post("/batches", json={"urls": urls}).json()["batch"]
    redis = redis_sync.Redis.from_url(settings.redis_url)
    try:
        with workers(env, 2, tmp_path, "--concurrency", "4"):
            assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["done"] >= 1, 30, interval=0.1)
            seconds, _ = redis.time()
            redis.zadd(keys.host_leases("parked.test:80"), {"w9:1": (seconds + 60) * 1000})
            redis.sadd(keys.host_waiters("parked.test:80"), keys.gate_wake("w8"))
            redis.pexpire(keys.host_waiters("parked.test:80"), 60_000)
            paths = ["/queue", "/workers", "/batches", f"/batches/{batch}", "/hosts", "/hosts/rules", "/totals"]
            for path in [*paths, f"/batches/{batch}/results", "/metrics"]:
                reply = api.get(path)
                assert reply.status_code == 200, (path, reply.text[:300])
            up = {labels: value for (name, labels), value in samples(api).items() if name == "crawlq_scrape_source_up"}
            assert up and all(value == 1 for value in up.values()), up
            hosts = [entry["host"] for entry in api.get("/hosts").json()["hosts"]]
            assert hosts.count("parked.test:80") == 1 and not any(host.endswith(":waiters") for host in hosts), hosts
            for args in (["hosts"], ["status", "--json"]):
                done = run_cli(args, env)
                assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr[-500:])
                assert "parked.test:80" in done.stdout and "waiters" not in done.stdout, done.stdout[-500:]
            assert not api.get(f"/batches/{batch}").json()["stats"]["complete"]  # seen while the crawl ran
            assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["complete"], 60, interval=0.2)
    finally:
        redis.close()
