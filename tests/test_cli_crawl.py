"""`crawlq crawl` on one machine: results file, and a clean stop on Ctrl-C that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from crawlq_local.target import ThreadedTargetSite
from tests.helpers import CRAWLQ, cli_env, wait_until


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def crawl_env() -> dict[str, str]:
    env = cli_env("unused")
    del env["CRAWLQ_REDIS_URL"]  # crawl starts its own embedded server
    return env


@pytest.mark.timeout(60)
def test_crawl_writes_every_result(tmp_path: Path) -> None:
    with ThreadedTargetSite() as site:
        urls = [site.url(f"/page/{i}") for i in range(30)] + [site.url("/status/404")]
        source = tmp_path / "urls.txt"
        source.write_text("\n".join(urls) + "\nnot a url\n")
        out = tmp_path / "results.jsonl"
        done = subprocess.run(
            [*CRAWLQ, "crawl", str(source), "--workers", "2", "--out", str(out)],
            env=crawl_env(), capture_output=True, text=True, timeout=50, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "line 32: missing scheme" in done.stderr
    records = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 31 and sum(r["ok"] for r in records) == 30
    assert "succeeded    30/31" in done.stdout


@pytest.mark.timeout(60)
def test_crawl_keeps_results_by_default_and_names_the_per_host_bound(tmp_path: Path) -> None:
    with ThreadedTargetSite() as site:
        source = tmp_path / "urls.txt"
        source.write_text("\n".join(site.url(f"/page/{i}") for i in range(12)))
        done = subprocess.run(
            [*CRAWLQ, "crawl", str(source), "--workers", "1", "--concurrency", "4", "--per-host", "1"],
            env=crawl_env(), capture_output=True, text=True, timeout=50, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept = list(tmp_path.glob("*.jsonl"))
    assert len(kept) == 1 and f"wrote 12 results to {kept[0]}" in done.stderr
    assert len(kept[0].read_text().splitlines()) == 12
    assert "per-host limits, not the workers, bounded this crawl" in done.stderr and "--per-host" in done.stderr


def test_host_bound_note_only_when_hosts_allow_fewer_fetches_than_slots() -> None:
    import collections

    from crawlq.settings import HostRule, Settings
    from crawlq_cli.main import host_bound_note

    settings = Settings(concurrency=10, per_host_concurrency=2)
    one_host = collections.Counter({"a.test": 100})
    assert "at most 2 fetches at once while the workers had 20 slots" in host_bound_note(settings, one_host, 2)
    many = collections.Counter({f"h{i}.test": 5 for i in range(10)})
    assert host_bound_note(settings, many, 2) == ""
    ruled = settings.model_copy(update={"host_rules": [HostRule(pattern="a.test", concurrency=20)]})
    assert host_bound_note(ruled, one_host, 2) == ""
    assert host_bound_note(settings, collections.Counter(), 2) == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_crawl_cleans_up_on_interrupt(tmp_path: Path, signum: int) -> None:
    with ThreadedTargetSite() as site:
        source = tmp_path / "urls.txt"
        source.write_text("\n".join(site.url(f"/delay?ms=400&i={i}") for i in range(400)))
        crawl = subprocess.Popen(
            [*CRAWLQ, "crawl", str(source), "--workers", "2", "--concurrency", "2"],
            env=crawl_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        )  # fmt: skip
        assert wait_until(lambda: len(children_of(crawl.pid)) >= 3 and site.stats.total > 5, timeout=30)
        started = children_of(crawl.pid)
        crawl.send_signal(signum)
        _, stderr = crawl.communicate(timeout=30)
    assert crawl.returncode == 130, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert wait_until(lambda: not any(alive(pid) for pid in started), timeout=10), started


async def test_csv_cells_that_look_like_formulas_are_written_as_text() -> None:
    import csv
    import io

    from crawlq_cli.main import _write_results

    async def records() -> Any:
        for title in ('=HYPERLINK("http://x")', "+1", "@SUM(A1)", "plain", "-x"):
            yield {"url": "http://a.test/", "ok": True, "title": title, "status": 200}

    out = io.StringIO()
    assert await _write_results(records(), out, "csv") == 5
    titles = [row["title"] for row in csv.DictReader(io.StringIO(out.getvalue()))]
    assert titles == ['\'=HYPERLINK("http://x")', "'+1", "'@SUM(A1)", "plain", "'-x"]


@pytest.mark.timeout(90)
def test_crawl_says_why_its_workers_exited_and_stops_when_none_is_left(tmp_path: Path) -> None:
    """A worker that cannot start (its metrics port is taken) is reported with its own sentence; with one
    worker left the crawl completes, with none it stops with exit 1 instead of waiting for ever."""
    import socket

    with socket.socket() as taken, ThreadedTargetSite() as site:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        source = tmp_path / "urls.txt"
        source.write_text("\n".join(site.url(f"/page/{i}") for i in range(20)) + "\n")
        env = {**crawl_env(), "CRAWLQ_METRICS_PORT": str(taken.getsockname()[1])}
        stopped = subprocess.run(
            [*CRAWLQ, "crawl", str(source), "--workers", "2", "--no-out"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert stopped.returncode == 1, stopped.stderr
        assert "worker 1 of 2 exited with code 2" in stopped.stderr and "worker 2 of 2 exited" in stopped.stderr
        assert "CRAWLQ_METRICS_PORT" in stopped.stderr and "Traceback" not in stopped.stderr
        assert "every worker exited, so batch" in stopped.stderr
    with ThreadedTargetSite() as site:
        source.write_text("\n".join(site.url(f"/delay/1?n={i}") for i in range(12)) + "\n")  # 6 s at 2 per host
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**crawl_env(), "CRAWLQ_METRICS_PORT": str(port)}  # free: the first worker binds it, the second cannot
        done = subprocess.run(
            [*CRAWLQ, "crawl", str(source), "--workers", "2", "--no-out"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("exited with code 2") == 1 and "CRAWLQ_METRICS_PORT" in done.stderr
    assert "succeeded    12/12" in done.stdout
