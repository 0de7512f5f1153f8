"""crawlq_cli/render.py: the batch report's lines and the status tables, from stats built the way the store
builds them (`BatchStats.from_counters`) and a status shaped as `Client.status` returns it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from crawlq.codec import pack, unpack
from crawlq.heartbeats import Heartbeat
from crawlq.models import BatchStats
from crawlq_cli.render import eta_s, hosts_table, report_lines, status_table
from producer.cluster import ClusterStatus, HostState, QueueUrls

CREATED_MS = 1_800_000_000_000
RAW = {
    "total": "10",
    "done": "8",
    "succeeded": "6",
    "failed": "2",
    "latency_n": "8",
    "latency_sum_ms": "80",
    "s:200": "6",
    "s:404": "1",
    "e:http_status": "1",
    "e:timeout": "1",
    "attempts": "9",
    "bytes": "600",
    "created_at": str(CREATED_MS),
}


def stats(**extra: str) -> BatchStats:
    return BatchStats.from_counters("b1", {**RAW, **extra}, now=CREATED_MS + 4000)


def text(table: Table | str) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_report_lines_of_a_running_batch() -> None:
    lines = report_lines(stats())
    assert lines[0] == "batch b1: running"
    assert lines[1] == "  succeeded    6/10 (75.0 %); failed 2; pending 2"
    assert lines[2].startswith("  latency      avg 10.0 ms   p50 ")
    assert lines[3] == "  statuses     200: 6, 404: 1"
    assert lines[4] == "  errors       http_status: 1, timeout: 1"
    assert lines[5] == "  total time   4.0 s   pages/s 2.0"
    assert len(lines) == 6


def test_report_lines_name_lost_unchanged_and_discovered() -> None:
    lost = stats(unchanged="3", discovered="4", **{"d:1": "4"}).model_copy(update={"lost_reason": "urls missing"})
    lines = report_lines(lost)
    assert lines[1] == "  lost         urls missing"
    assert "  unchanged    3 (re-crawl: 304 or the same content_sha256)" in lines
    assert "  discovered   4 by following links (URLs by depth: 0: 6, 1: 4)" in lines


def test_report_of_an_empty_batch_shows_dashes() -> None:
    lines = report_lines(BatchStats.from_counters("e", {}, now=CREATED_MS))
    assert lines[1] == "  succeeded    0/0 (-); failed 0; pending 0"
    assert lines[2] == "  latency      avg -   p50 -   p95 -   p99 -"
    assert lines[3:5] == ["  statuses     -", "  errors       -"]


def test_eta_is_pending_over_rate_and_none_when_complete() -> None:
    assert eta_s(stats()) == 1.0  # 2 pending at 2 pages/s
    assert eta_s(stats(finished_at=str(CREATED_MS + 4000))) is None


def status(**extra: Any) -> ClusterStatus:
    return ClusterStatus(
        queue=QueueUrls(
            ready_urls=1200, deferred_urls=3, in_flight_urls=40, ready_jobs=12, deferred_jobs=1, in_flight_jobs=2
        ),
        workers=[
            Heartbeat("w1", in_flight=20, concurrency=32, pages_per_s_1m=5.5, urls_done=90, draining=False),
            Heartbeat("w2", in_flight=1, concurrency=32, pages_per_s_1m=None, draining=True),
        ],
        batches=[stats(), "gone"],
        **extra,
    )


def host(name: str, in_flight: int, limit: int, delay_s: float, cooldown_s: float) -> HostState:
    return HostState(name, in_flight, limit, delay_s, cooldown_s, penalty_ms=0)


def test_status_table_queue_workers_batches() -> None:
    out = status_table(status())
    assert len(out) == 3
    assert out[0] == ("queue: [bold]1,200[/] URLs ready, 3 deferred, 40 in flight  [dim](12 / 1 / 2 jobs)[/]")
    workers = text(out[1])
    assert "workers (2 live, 5.5 pages/s over the last minute)" in workers
    assert "20/32" in workers and "5.5" in workers and "90" in workers
    assert "yes" in workers  # w2 is draining
    batches = text(out[2])
    assert "8/10" in batches and "running" in batches and "2.0" in batches
    assert "gone" in batches and "unknown" in batches and "?" in batches


def test_status_table_adds_the_busiest_hosts() -> None:
    hosts = [host("a.test", in_flight=4, limit=4, delay_s=0.5, cooldown_s=90)]
    out = status_table(status(hosts=hosts, hosts_total=7))
    assert len(out) == 4
    shown = text(out[3])
    assert "busiest 1 of 7 hosts" in shown
    assert "a.test" in shown and "0.5 s" in shown and "1 min 30 s" in shown


def test_hosts_table_without_a_total_is_titled_hosts() -> None:
    shown = text(hosts_table([host("b.test", in_flight=0, limit=2, delay_s=0, cooldown_s=0)]))
    assert shown.splitlines()[0].strip() == "hosts"
    assert "b.test" in shown


def test_status_json_keeps_its_shape() -> None:
    """`crawlq status --json`: the same object the status dict had, a lost batch as {batch, state: unknown}."""
    shown = status(hosts=[host("a.test", 1, 2, 0, 0)], hosts_total=3, notes={"b1": "slow"}).to_dict()
    assert set(shown) == {"queue", "hosts", "hosts_total", "workers", "batches", "overall", "notes"}
    assert shown["queue"] == {
        "urls": {"ready": 1200, "deferred": 3, "in_flight": 40},
        "jobs": {"ready": 12, "deferred": 1, "in_flight": 2},
    }
    assert shown["workers"][0]["id"] == "w1" and shown["workers"][0]["pages_per_s_1m"] == 5.5
    assert shown["batches"][1] == {"batch": "gone", "state": "unknown"} and shown["batches"][0]["total"] == 10
    assert shown["hosts"][0]["host"] == "a.test" and shown["hosts_total"] == 3 and shown["notes"] == {"b1": "slow"}


def test_a_heartbeat_round_trips_and_reads_an_older_or_newer_one() -> None:
    beat = Heartbeat("h:1:a", host="h", started_at=5, in_flight=3, concurrency=8, pages_per_s_1m=1.5, draining=True)
    assert Heartbeat.from_record(unpack(pack(beat.to_record()))) == beat
    assert Heartbeat.from_record({"id": "x", "in_flight": 2, "from_a_newer_worker": 1}) == Heartbeat("x", in_flight=2)
