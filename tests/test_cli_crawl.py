"""`crawlq crawl` on one machine: results file, and a clean stop on Ctrl-C that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from crawlq.target import ThreadedTargetSite
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
