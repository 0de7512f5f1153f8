"""End to end through the real CLI: two `crawlq worker` processes, `crawlq submit`, `wait`, `stats`, `results`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from crawlq.urls import canonical
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.helpers import cli_env, run_cli, workers


@pytest.fixture
def env(redis_server: EmbeddedServer) -> dict[str, str]:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    return cli_env(redis_server.url)


def url_list(site: ThreadedTargetSite) -> list[str]:
    urls = [site.url(f"/page/{i}") for i in range(40)]
    urls += [site.url(f"/delay?ms=300&i={i}") for i in range(6)]
    urls += [site.url(f"/flaky/e2e-{i}?fails=2&status=503") for i in range(4)]
    urls += [site.url(f"/status/404?i={i}") for i in range(3)]
    urls += [site.url(f"/status/500?i={i}") for i in range(2)]
    urls += [site.url("/retry-after/e2e-ra?status=429&after=1&fails=1")]
    return urls


def test_submit_wait_stats_results_through_the_cli(
    site: ThreadedTargetSite, env: dict[str, str], tmp_path: Path
) -> None:
    urls = url_list(site)
    text = (
        "# a comment\n\n"
        + "\n".join(urls)
        + "\n"
        + urls[0].replace("http://", "HTTP://")
        + "#fragment"
        + "\nftp://nope\n"
    )
    with workers(env, 2, tmp_path, "--concurrency", "8"):
        submitted = run_cli(["submit", "-", "--batch", "e2e", "--json"], env, stdin=text)
        assert submitted.returncode == 0, submitted.stderr
        assert orjson.loads(submitted.stdout) == {"batch": "e2e", "queued": len(urls), "duplicates": 1, "invalid": 1}
        assert "line " in submitted.stderr and "scheme 'ftp'" in submitted.stderr
        again = run_cli(["submit", "-", "--batch", "e2e", "--json"], env, stdin=text)
        assert orjson.loads(again.stdout)["queued"] == 0
        waited = run_cli(["wait", "e2e", "--timeout", "60"], env, timeout=90)
        assert waited.returncode == 0, waited.stderr
    stats = orjson.loads(run_cli(["stats", "e2e", "--json"], env).stdout)
    records = [orjson.loads(line) for line in run_cli(["results", "e2e"], env).stdout.splitlines()]

    assert len(records) == len(urls) == stats["total"] == stats["done"]
    assert sorted(r["url"] for r in records) == sorted(canonical(u) for u in urls)
    assert stats["succeeded"] == sum(r["ok"] for r in records) == 40 + 6 + 4 + 1
    assert stats["failed"] == sum(not r["ok"] for r in records) == 5
    assert stats["success_rate"] == pytest.approx(stats["succeeded"] / stats["done"])
    latencies = [r["latency_ms"] for r in records if r["latency_ms"] is not None]
    assert stats["avg_latency_ms"] == pytest.approx(sum(latencies) / len(latencies), abs=0.01)
    assert stats["status_counts"] == {"200": 51, "404": 3, "500": 2}
    assert stats["error_counts"] == {"http_status": 5}
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
    assert stats["complete"] and stats["finished_at"]
    by_url = {r["url"]: r for r in records} | {u: r for r in records for u in urls if canonical(u) == r["url"]}
    assert all(by_url[site.url(f"/flaky/e2e-{i}?fails=2&status=503")]["attempts"] == 3 for i in range(4))
    assert by_url[site.url("/status/500?i=0")]["attempts"] == 3  # retried, then final
    assert by_url[site.url("/status/404?i=0")]["attempts"] == 1  # final at once
    assert site.stats.key_hits["e2e-ra"] == 2

    table = list(csv.DictReader(io.StringIO(run_cli(["results", "e2e", "--format", "csv"], env).stdout)))
    assert len(table) == len(urls) and {"url", "ok", "status", "latency_ms", "final_url"} <= set(table[0])
    failed = run_cli(["results", "e2e", "--failed", "--format", "urls"], env).stdout.splitlines()
    assert sorted(failed) == sorted(r["url"] for r in records if not r["ok"]) and len(failed) == 5


def test_cli_errors_are_one_sentence(env: dict[str, str]) -> None:
    unreachable = dict(env, CRAWLQ_REDIS_URL="redis://127.0.0.1:1/0")
    for args in (["stats", "x"], ["status"], ["submit", "-"], ["worker"]):
        result = run_cli(args, unreachable, stdin="http://a.test/\n")
        assert result.returncode == 1, (args, result.stderr)
        assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    unknown = run_cli(["stats", "no-such-batch"], env)
    assert unknown.returncode == 1 and "unknown batch 'no-such-batch'" in unknown.stderr


def test_strict_refuses_invalid_input(env: dict[str, str]) -> None:
    result = run_cli(["submit", "-", "--strict", "--batch", "s"], env, stdin="http://a.test/\nhttp://exa mple.com/\n")
    assert result.returncode == 3
    assert "line 2: space in the host" in result.stderr
    assert run_cli(["stats", "s"], env).returncode == 1


def test_every_command_has_help_with_examples(env: dict[str, str]) -> None:
    for command in ("demo", "crawl", "worker", "submit", "wait", "stats", "results", "status"):
        result = run_cli([command, "--help"], env)
        assert result.returncode == 0 and "Examples:" in result.stdout, command
        before = result.stdout.split("Examples:")[0]
        assert before.endswith("\n\n  "), f"{command}: 'Examples:' runs into the paragraph before it"


def test_wait_says_when_no_worker_is_alive(env: dict[str, str], site: ThreadedTargetSite) -> None:
    """A batch with no live worker does not wait in silence: `wait` says so once, then times out (exit 1)."""
    assert run_cli(["submit", "-", "--batch", "lonely"], env, stdin=site.url("/page/1") + "\n").returncode == 0
    waited = run_cli(["wait", "lonely", "--timeout", "7"], env, timeout=30)
    assert waited.returncode == 1, waited.stderr
    assert waited.stderr.count("no live worker sends heartbeats") == 1, waited.stderr
    assert "Traceback" not in waited.stderr
