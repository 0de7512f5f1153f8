"""/metrics parsed with prometheus-client's own parser and checked against a real small crawl."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from crawlq import histogram
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import wait_until, workers


def samples(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(api.base_url.join("/metrics"))  # public: no token
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_match_a_real_crawl(
    api: httpx.Client, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = [site.url(f"/page/{i}") for i in range(20)] + [site.url(f"/status/404?i={i}") for i in range(3)]
    urls += [site.url(f"/status/500?i={i}") for i in range(2)]
    batch = api.post("/batches", json={"urls": urls, "batch": "m1"}).json()["batch"]
    before = samples(api)
    assert before[("crawlq_queue_urls", (("state", "ready"),))] == 25
    assert before[("crawlq_queue_jobs", (("state", "ready"),))] == 25  # 1 URL a job for 25 URLs
    assert before[("crawlq_batches_active", ())] == 1
    assert before[("crawlq_batch_urls", (("batch", "m1"), ("state", "total")))] == 25
    assert before[("crawlq_workers_alive", ())] == 0

    with workers(env, 2, tmp_path):
        body = api.post("/batches", json={"urls": urls, "batch": batch, "wait_s": 25}).json()
        assert body["stats"]["complete"], body
        assert wait_until(lambda: samples(api)[("crawlq_workers_alive", ())] == 2, timeout=10)
        after = samples(api)
    stats = body["stats"]

    assert after[("crawlq_urls_done_total", (("outcome", "succeeded"),))] == stats["succeeded"] == 20
    assert after[("crawlq_urls_done_total", (("outcome", "failed"),))] == stats["failed"] == 5
    assert after[("crawlq_responses_total", (("status_class", "2xx"),))] == 20
    assert after[("crawlq_responses_total", (("status_class", "4xx"),))] == 3
    assert after[("crawlq_responses_total", (("status_class", "5xx"),))] == 2
    assert after[("crawlq_url_errors_total", (("error_class", "http_status"),))] == 5
    assert after[("crawlq_fetch_attempts_total", ())] == stats["attempts"]
    assert after[("crawlq_retries_total", ())] == stats["attempts"] - 25 >= 2 * 2  # each 500 tried 3 times
    latencies = [r["latency_ms"] for r in body["results"] if r["latency_ms"] is not None]
    assert after[("crawlq_fetch_duration_seconds_count", ())] == len(latencies) == 25
    assert abs(after[("crawlq_fetch_duration_seconds_sum", ())] - sum(latencies) / 1000) < 1e-3
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == "crawlq_fetch_duration_seconds_bucket"
    )
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), 25)
    within_1s = sum(histogram.GAMMA ** histogram.bucket_of(latency) <= 1000 * (1 + 1e-9) for latency in latencies)
    assert dict(buckets)[1.0] == within_1s  # a log bucket counts under `le` if its upper edge is within it
    for state in ("ready", "deferred", "in_flight"):
        assert after[("crawlq_queue_urls", (("state", state),))] == 0
    assert after[("crawlq_batches_active", ())] == 0
    assert after[("crawlq_hosts_in_cooldown", ())] == 0
    assert all(value == 1 for (name, _), value in after.items() if name == "crawlq_scrape_source_up")
    labels = [value for (_, pairs) in after for _, value in pairs]
    assert not any("127.0.0.1" in value or "://" in value for value in labels)  # never a URL or host


def test_fetches_in_flight_and_urls_of_running_jobs(
    api: httpx.Client, site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = [site.url(f"/delay?ms=4000&i={i}") for i in range(4)]
    with workers(env, 1, tmp_path, "--concurrency", "4"):
        api.post("/batches", json={"urls": urls})

        def busy() -> bool:
            now = samples(api)
            return (
                now[("crawlq_fetches_in_flight", ())] == 4
                and now[("crawlq_queue_urls", (("state", "in_flight"),))] == 4
            )

        assert wait_until(busy, timeout=3.5, interval=0.2)
