"""The HTTP API against a real uvicorn server, the suite's Redis and real worker processes."""

from __future__ import annotations

import asyncio
import csv
import io
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import redis as redis_sync

from crawlq.settings import Settings
from crawlq.store import Store
from crawlq.urls import canonical, url_id
from crawlq_api.guard import SubmitGuard
from crawlq_api.reads import gather_within
from crawlq_local.target import ThreadedTargetSite
from producer.client import Client
from producer.submit import chunk_size_for
from tests import factories
from tests.api.conftest import READ_TOKEN
from tests.helpers import beating, workers


def test_tokens_are_required_except_on_public_paths(api: httpx.Client) -> None:
    base = str(api.base_url)
    with httpx.Client(base_url=base) as anonymous:
        assert anonymous.get("/queue").status_code == 401
        assert anonymous.get("/queue", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/queue", headers={"Authorization": "Basic abc"}).status_code == 401
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"ready": True}
        assert anonymous.get("/metrics").status_code == 200
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert anonymous.get("/queue", headers=read).status_code == 200
        refused = anonymous.post("/batches", json={"urls": []}, headers=read)
        assert refused.status_code == 401
        assert READ_TOKEN not in refused.text
    assert api.post("/batches", json={"urls": []}).status_code == 200


def test_public_paths_are_configurable(api_factory: Callable[..., httpx.Client]) -> None:
    api = api_factory(public_paths=["/healthz"])
    with httpx.Client(base_url=str(api.base_url)) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/healthz").status_code == 200


def test_malformed_bodies_get_422_with_the_reason(api_factory: Callable[..., httpx.Client]) -> None:
    api = api_factory(max_body_bytes=2000)
    bad_json = api.post("/batches", content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422 and "JSON" in bad_json.text
    both = api.post("/batches", json={"urls": ["http://127.0.0.1/"], "lines": "x"})
    assert both.status_code == 422 and "exactly one of" in both.text
    assert api.post("/batches", json={"urls": [], "wait_s": 31}).status_code == 422
    assert api.post("/batches", json={"urls": [], "batch": "a b"}).status_code == 422
    assert api.post("/batches", json={"urls": [], "extra": 1}).status_code == 422
    big = api.post("/batches", json={"lines": "x" * 3000})
    assert big.status_code == 413 and "CRAWLQ_API_MAX_BODY_BYTES" in big.json()["detail"]


def test_submit_validates_like_the_cli(api: httpx.Client, site: ThreadedTargetSite) -> None:
    urls = [site.url("/page/1"), site.url("/page/1").replace("http://", "HTTP://"), "ftp://nope", site.url("/page/2")]
    answer = api.post("/batches", json={"lines": "# c\n\n" + "\n".join(urls), "batch": "v1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["batch"], body["queued"], body["duplicates"], body["invalid"]) == ("v1", 2, 1, 1)
    assert body["invalid_lines"][0]["line"] == 5 and "scheme 'ftp'" in body["invalid_lines"][0]["reason"]
    assert body["waited"] is False and body["results"] == []
    strict = api.post("/batches", json={"urls": urls, "batch": "v2", "strict": True})
    assert strict.status_code == 422 and "line 3" in strict.text
    assert api.get("/batches/v2").status_code == 404  # nothing was queued


def test_submit_refuses_non_public_addresses_whatever_the_workers_allow(
    api_factory: Callable[..., httpx.Client], site: ThreadedTargetSite
) -> None:
    api = api_factory(allowed_networks=[])  # the workers' settings (allow_private=1) do not matter here
    urls = [
        site.url("/page/1"),
        "http://[::1]:9/",
        "http://10.1.2.3/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
    ]
    body = api.post("/batches", json={"urls": urls}).json()
    assert body["queued"] == 0 and body["invalid"] == 5
    assert all(bad["reason"].startswith("blocked_address: ") for bad in body["invalid_lines"])
    assert "CRAWLQ_API_ALLOWED_NETWORKS" in body["invalid_lines"][0]["reason"]
    guard = SubmitGuard([], 1.0)
    assert guard.blocked_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert guard.blocked_reason(ipaddress.ip_address("169.254.169.254")) is not None
    assert guard.blocked_reason(ipaddress.ip_address("100.64.0.1")) is not None
    assert SubmitGuard(["10.0.0.0/8"], 1.0).blocked_reason(ipaddress.ip_address("10.1.2.3")) is None


def test_wait_s_returns_the_complete_results(
    api: httpx.Client, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = [site.url(f"/page/{i}") for i in range(10)] + [site.url("/status/404")]
    with workers(env, 1, tmp_path):
        body = api.post("/batches", json={"urls": urls, "wait_s": 25}).json()
    assert body["partial"] is False and body["pending"] == 0 and body["partial_failure"] is False
    assert body["stats"]["complete"] and body["stats"]["done"] == 11
    assert sorted(r["url"] for r in body["results"]) == sorted(canonical(u) for u in urls)
    assert sum(not r["ok"] for r in body["results"]) == 1


def test_wait_s_deadline_answers_with_what_is_complete(
    api: httpx.Client, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = [site.url(f"/page/{i}") for i in range(4)] + [site.url(f"/delay?ms=8000&i={i}") for i in range(2)]
    with workers(env, 1, tmp_path) as procs:
        assert beating(env, procs)  # the worker is up and polls
        started = time.monotonic()
        answer = api.post("/batches", json={"urls": urls, "wait_s": 2})
        elapsed_s = time.monotonic() - started
    body = answer.json()
    assert answer.status_code == 200 and elapsed_s < 2 + 3 + 2  # wait_s + read deadline + slack
    assert body["partial"] is True and body["pending"] == 2
    assert len(body["results"]) == 4 and all(r["ok"] for r in body["results"])


def test_wait_s_without_any_worker_never_hangs(api: httpx.Client, site: ThreadedTargetSite) -> None:
    started = time.monotonic()
    body = api.post("/batches", json={"urls": [site.url("/page/1")], "wait_s": 1}).json()
    assert time.monotonic() - started < 5
    assert body["partial"] is True and body["pending"] == 1 and body["results"] == []


def test_follow_streams_results_as_they_are_committed(
    api: httpx.Client, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = [site.url(f"/delay?ms=100&i={i}") for i in range(3)] + [site.url(f"/delay?ms=2500&i={i}") for i in range(2)]
    arrivals: list[tuple[float, dict[str, object]]] = []
    with workers(env, 1, tmp_path):
        batch = api.post("/batches", json={"urls": urls}).json()["batch"]
        started = time.monotonic()
        with api.stream("GET", f"/batches/{batch}/results", params={"follow": "true"}) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            for line in stream.iter_lines():
                arrivals.append((time.monotonic() - started, orjson.loads(line)))
    assert sorted(str(record["url"]) for _, record in arrivals) == sorted(canonical(u) for u in urls)
    fast = [at for at, record in arrivals if "ms=100" in str(record["url"])]
    slow = [at for at, record in arrivals if "ms=2500" in str(record["url"])]
    assert max(fast) < min(slow) - 1.0  # the fast ones were sent while the slow ones were still fetching
    assert api.get(f"/batches/{batch}").json()["stats"]["complete"]


def test_results_as_csv_and_unknown_batches(api: httpx.Client, site: ThreadedTargetSite, settings: Settings) -> None:
    asyncio.run(_finished_batch(settings, "done1", [site.url("/a"), site.url("/b")]))
    rows = list(csv.DictReader(io.StringIO(api.get("/batches/done1/results", params={"format": "csv"}).text)))
    assert sorted(row["url"] for row in rows) == sorted(canonical(site.url(p)) for p in ("/a", "/b"))
    assert {row["status"] for row in rows} == {"200"}
    followed = api.get("/batches/done1/results", params={"follow": "true"}).text.splitlines()
    assert len(followed) == 2  # a complete batch: follow ends at once
    assert api.get("/batches/nope/results").status_code == 404
    assert api.get("/batches/nope").status_code == 404


async def _finished_batch(settings: Settings, batch: str, urls: list[str]) -> None:
    """A batch whose results are committed directly through the store (no fetch)."""
    async with await Client.connect(settings) as client:
        await client.submit(urls, batch)
        results = [(url_id(canonical(u)), factories.result(canonical(u), latency_ms=1.5, size_bytes=10)) for u in urls]
        await client.store.commit(batch, results)


def test_batches_are_listed_and_detailed(api: httpx.Client, site: ThreadedTargetSite) -> None:
    api.post("/batches", json={"urls": [site.url("/x/1"), site.url("/x/2")], "batch": "first"})
    time.sleep(0.01)
    api.post("/batches", json={"urls": [site.url("/y/1")], "batch": "second"})
    page = api.get("/batches", params={"limit": 1}).json()
    assert page["total"] == 2 and [b["batch"] for b in page["batches"]] == ["second"]
    assert page["partial_failure"] is False and page["unknown"] == []
    after = api.get("/batches", params={"limit": 1, "offset": 1}).json()
    assert [b["batch"] for b in after["batches"]] == ["first"]
    detail = api.get("/batches/first").json()
    assert detail["stats"]["total"] == 2 and detail["progress"] == 0 and detail["open_jobs"] >= 1
    assert api.get("/batches", params={"limit": 101}).status_code == 422


def test_queue_counts_urls_not_jobs(api: httpx.Client, site: ThreadedTargetSite, settings: Settings) -> None:
    urls = [site.url(f"/q/{i}") for i in range(250)]
    api.post("/batches", json={"urls": urls, "batch": "deep"})

    async def defer() -> None:
        async with await Client.connect(settings) as client:
            store = Store(client.redis, settings)
            entries = [factories.entry(site.url(f"/later/{i}")) for i in range(7)]
            await store.enqueue("later", [entries], run_at_ms=int(time.time() * 1000) + 600_000)

    asyncio.run(defer())
    depth = api.get("/queue").json()
    assert depth["urls"] == {"ready": 250, "deferred": 7, "in_flight": 0}
    assert chunk_size_for(250, settings) == 4
    assert depth["jobs"] == {"ready": 63, "deferred": 1, "in_flight": 0}  # 4 URLs a job for 250 URLs
    assert depth["workers_alive"] == 0 and depth["partial_failure"] is False


def test_a_stalled_redis_gives_a_partial_answer_in_time(
    api_factory: Callable[..., httpx.Client], settings: Settings
) -> None:
    api = api_factory(read_deadline_s=0.5)
    assert api.get("/queue").status_code == 200  # connected
    redis_sync.Redis.from_url(settings.redis_url).execute_command("CLIENT", "PAUSE", "2000")
    started = time.monotonic()
    depth = api.get("/queue")
    elapsed_s = time.monotonic() - started
    time.sleep(2)
    assert depth.status_code == 200 and elapsed_s < 1.8
    assert depth.json()["partial_failure"] is True and depth.json()["urls"] is None
    assert api.get("/queue").json()["partial_failure"] is False  # recovered


async def test_gather_within_keeps_what_arrived() -> None:
    async def fast() -> int:
        return 1

    async def slow() -> int:
        await asyncio.sleep(5)
        return 2

    async def broken() -> int:
        raise ValueError("no")

    started = time.monotonic()
    gathered = await gather_within(0.2, {"fast": fast(), "slow": slow(), "broken": broken()})
    assert time.monotonic() - started < 1
    assert gathered.values == {"fast": 1} and sorted(gathered.failed) == ["broken", "slow"]
    assert isinstance(gathered.errors["broken"], ValueError) and gathered.partial_failure
