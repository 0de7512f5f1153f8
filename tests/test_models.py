"""crawlq/models.py: records round-trip through msgpack (as stored in Redis) and counters become stats."""

from __future__ import annotations

import pytest

from crawlq.codec import pack, unpack
from crawlq.models import BatchStats, Content, ErrorClass, UrlResult
from crawlq.stats import counters
from tests import factories

CONTENT = Content(
    content_sha256="ab" * 32,
    content_type="text/html",
    encoding="utf-8",
    title="Hello",
    snippet="Hello world",
    etag='"e1"',
    content_length=11,
)


@pytest.mark.parametrize(
    "result",
    [
        factories.result("http://a.test/ok", content=CONTENT, fetched_at=5),
        factories.result("http://a.test/x", status=404, error=ErrorClass.HTTP_STATUS, message="HTTP 404"),
        factories.result("http://a.test/t", status=None, latency_ms=None, attempts=3, error=ErrorClass.TIMEOUT),
        factories.result("http://a.test/r", final_url="http://a.test/final"),
    ],
    ids=["content", "http-status", "timeout", "redirected"],
)
def test_a_result_round_trips_through_its_record(result: UrlResult) -> None:
    back = UrlResult.from_record(result.url, unpack(pack(result.to_record())))
    assert back == result
    assert back.error is None or isinstance(back.error, ErrorClass)


def test_an_error_is_stored_and_exported_as_its_string() -> None:
    failed = factories.result(status=None, error=ErrorClass.CONNECT, message="refused")
    assert failed.to_dict()["error"] == "connect"
    assert not failed.ok


def test_content_round_trips_and_absent_content_stays_absent() -> None:
    record: dict[str, object] = {}
    CONTENT.to_record(record)
    assert Content.from_record(unpack(pack(record))) == CONTENT
    assert Content.from_record({}) is None


def test_batch_stats_from_the_counters_results_add() -> None:
    results = [
        factories.result("http://a.test/1", latency_ms=10.0),
        factories.result("http://a.test/2", latency_ms=30.0),
        factories.result("http://a.test/3", status=503, error=ErrorClass.HTTP_STATUS, attempts=3, size_bytes=0),
    ]
    counts, latency_sum_ms = counters(results)
    raw = {name: str(value) for name, value in counts.items()}
    raw.update(total="4", latency_sum_ms=repr(latency_sum_ms), created_at="1000")
    stats = BatchStats.from_counters("b", raw, now=3000)
    assert (stats.total, stats.done, stats.pending, stats.succeeded, stats.failed) == (4, 3, 1, 2, 1)
    assert stats.status_counts == {"200": 2, "503": 1}
    assert stats.error_counts == {"http_status": 1}
    assert stats.avg_latency_ms == pytest.approx(50.0 / 3, abs=1e-3)
    assert (stats.attempts, stats.bytes) == (5, 200)
    assert stats.state == "running" and stats.elapsed_s == 2.0 and stats.pages_per_s == 1.5
    assert stats.p50_ms is not None and 10.0 * 0.8 <= stats.p50_ms <= 30.0 * 1.2  # histogram buckets are approximate


def test_batch_stats_round_trip_as_json() -> None:
    stats = BatchStats.from_counters("b", {"total": "2", "done": "2", "succeeded": "2", "finished_at": "9"}, now=9)
    assert stats.complete and stats.state == "complete"
    assert BatchStats.model_validate_json(stats.model_dump_json()) == stats
