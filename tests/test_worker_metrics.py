"""A worker's own /metrics (`CRAWLQ_METRICS_PORT`): a real worker process crawls a small local batch, and
its metrics, parsed with prometheus-client's parser, count what the results say."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import redis as redis_sync
from prometheus_client.parser import text_string_to_metric_families

from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import cli_env, run_cli, start_worker, wait_until, workers
from workers.metrics import status_class


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 304, 404, 503, None, 99)] == ["2xx", "3xx", "4xx", "5xx", "none", "none"]


def test_a_worker_serves_its_own_metrics(
    redis_server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    redis_sync.Redis.from_url(redis_server.url).flushdb()
    port = free_port()
    env = cli_env(redis_server.url, metrics_port=port, metrics_host="127.0.0.1")
    urls = [site.url(f"/page/{i}") for i in range(10)]
    urls += [site.url(f"/status/404?i={i}") for i in range(3)]
    urls += [site.url(f"/flaky/metrics-{i}?fails=1&status=500") for i in range(2)]
    with workers(env, 1, tmp_path):
        assert run_cli(["submit", "-", "--batch", "m"], env, stdin="\n".join(urls)).returncode == 0
        assert run_cli(["wait", "m", "--timeout", "60"], env, timeout=90).returncode == 0
        samples = scrape(port)
    outcomes = {labels: value for (name, labels), value in samples.items() if name == "crawlq_worker_fetches_total"}
    assert outcomes == {
        (("outcome", "ok"), ("status_class", "2xx")): 12,
        (("outcome", "http_status"), ("status_class", "4xx")): 3,
        (("outcome", "http_status"), ("status_class", "5xx")): 2,
    }
    assert samples[("crawlq_worker_retries_total", (("reason", "http_500"),))] == 2
    assert samples[("crawlq_worker_fetch_duration_seconds_count", ())] == 17
    assert 0 < samples[("crawlq_worker_fetch_duration_seconds_sum", ())] < 17 * 10
    assert samples[("crawlq_worker_fetches_in_flight", ())] == 0
    assert ("crawlq_worker_hosts_in_cooldown", ()) in samples
    assert ("crawlq_worker_urls_waiting_for_hosts", ()) in samples
    assert not any(site.host in value for _, labels in samples for _, value in labels)  # no host as a label


def test_a_taken_metrics_port_is_one_sentence(redis_server: EmbeddedServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(redis_server.url, metrics_port=port, metrics_host="127.0.0.1")
        proc = start_worker(env, tmp_path / "worker.log")
        assert wait_until(lambda: proc.poll() is not None, 30)
        log = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 2, log
    assert f"cannot serve metrics on 127.0.0.1:{port} (CRAWLQ_METRICS_PORT)" in log and "Traceback" not in log


def test_fetch_counts_expose_what_prometheus_clients_own_counter_and_histogram_would() -> None:
    """The plain-integer counts give the same samples (bar `_created`) as a labelled Counter and a Histogram
    fed the same attempts, bucket edges included."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from workers.metrics import DURATION_BUCKETS_S, FetchCounts

    attempts = [("ok", "2xx", 0.005), ("ok", "2xx", 0.0051), ("http_status", "4xx", 30.0), ("timeout", "none", None)]
    attempts += [("ok", "2xx", 31.0), ("ok", "2xx", 0.0), ("connect", "none", 1.0)]
    counts, registry = FetchCounts(), CollectorRegistry()
    registry.register(counts)
    reference = CollectorRegistry()
    fetches = Counter(
        "crawlq_worker_fetches", counts.collect.__doc__ or "", ["outcome", "status_class"], registry=reference
    )
    duration = Histogram("crawlq_worker_fetch_duration_seconds", "", buckets=DURATION_BUCKETS_S, registry=reference)
    for outcome, status, seconds in attempts:
        counts.add(outcome, status, seconds)
        fetches.labels(outcome, status).inc()
        if seconds is not None:
            duration.observe(seconds)

    def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    ours = samples(generate_latest(registry))
    assert ours == samples(generate_latest(reference))
    assert ours[("crawlq_worker_fetch_duration_seconds_bucket", (("le", "0.005"),))] == 2  # 0.0 and 0.005 (le)
    assert ours[("crawlq_worker_fetches_total", (("outcome", "ok"), ("status_class", "2xx")))] == 4
