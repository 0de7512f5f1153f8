"""Job faults (issue 4, items 9, 11 and 12): two producers racing on one batch with duplicate spellings, jobs
that expire before any worker picks them up, and a pickle payload injected into the queue."""

from __future__ import annotations

import pickle
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from crawlq import keys
from crawlq.codec import unpack
from crawlq.urls import canonical
from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import (
    QUEUE,
    Workers,
    assert_exactly_once,
    fault_env,
    submit,
    sync_redis,
    tail_logs,
    wait_complete,
    write_urls,
)
from tests.helpers import CRAWLQ, wait_until


def spellings(site: ThreadedTargetSite, i: int) -> list[str]:
    """Four spellings of one URL that canonicalise to the same string."""
    base = site.url(f"/page/{i}")
    upper = base.replace("http://", "HTTP://", 1)
    return [f"{base}?a=1&b={i}", f"{upper}?b={i}&a=1", f"{base}?a=1&b={i}#top", f"{base}?b={i}&a=1#x"]


def job_payload_entries(r: redis.Redis, batch: str) -> Counter[str]:
    """How many queued jobs of `batch` own each URL id: a job runs only the payload entries listed in
    its row of the batch's job table (a payload may carry a URL another producer registered first)."""
    carried: Counter[str] = Counter()
    for job, row in r.hgetall(keys.batch_jobs(batch)).items():
        _batch, entries = unpack(r.get(keys.arq_job(job.decode())))["a"]
        owned = set(row.decode().split(","))
        carried.update(str(entry[0]) for entry in entries if str(entry[0]) in owned)
    return carried


@pytest.mark.timeout(90)
def test_09_two_producers_same_batch_with_duplicates(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """Two `crawlq submit` processes start at once on the same --batch (their writes held back by a 2.5 s
    `CLIENT PAUSE WRITE` so that their script calls interleave); each file spells every one of U = 300 URLs
    twice, differently and in its own order. Then 2 workers crawl the batch.

    Invariants: queued(1) + queued(2) == U and duplicates(1) + duplicates(2) == 4U - U; exactly once for U;
    the records hold the U canonical URLs; U unique jobs: each URL is owned by exactly one queued job
    (U entries in all); the target serves each URL once (U hits).
    """
    u, batch = 300, "twice"
    env = fault_env(server.url)
    rng = random.Random(9)
    files = []
    for name, pick in (("a", slice(0, 2)), ("b", slice(2, 4))):
        lines = [spelling for i in range(u) for spelling in spellings(site, i)[pick]]
        rng.shuffle(lines)
        files.append(write_urls(tmp_path / f"{name}.txt", lines))
    r = sync_redis(server.url)
    r.execute_command("CLIENT", "PAUSE", "2500", "WRITE")
    procs = [
        subprocess.Popen(
            [*CRAWLQ, "submit", str(path), "--batch", batch, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        for path in files
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    reports = [orjson.loads(out) for out, _ in outputs]
    carried = job_payload_entries(r, batch)
    with Workers(env, tmp_path, 2, "--concurrency", "10"):
        wait_complete(r, batch, 60, tmp_path)
    print(f"\n[item 9] reports: {reports}; job payloads carry {carried.total()} URL entries for {u} URLs")
    assert sum(report["queued"] for report in reports) == u
    assert sum(report["duplicates"] for report in reports) == 4 * u - u
    check = assert_exactly_once(server.url, batch, u)
    assert sorted(record.url for record in check.records) == sorted(canonical(spellings(site, i)[0]) for i in range(u))
    assert len(carried) == u
    twice = sorted(url_id for url_id, jobs in carried.items() if jobs > 1)
    entries = carried.total()
    assert entries == u, f"{len(twice)} URLs are owned by two jobs ({entries} entries), e.g. {twice[:3]}"
    fetched_twice = {path: hits for path, hits in site.stats.hits.items() if hits > 1}
    assert site.stats.total == u, f"fetched more than once: {fetched_twice}"


@pytest.mark.timeout(60)
def test_11_expired_jobs_fail_as_expired(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """N = 10 URLs are submitted with CRAWLQ_JOB_EXPIRES_S=1; the first worker starts 3 s later.

    Invariants: exactly once for N = 10; all 10 records fail with error `expired` (error_counts == {expired: 10});
    the target sees no request.
    """
    n, batch = 10, "expired"
    env = fault_env(server.url)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}") for i in range(n)])
    assert submit(fault_env(server.url, job_expires_s=1), path, batch)["queued"] == n
    time.sleep(3)
    r = sync_redis(server.url)
    with Workers(env, tmp_path, 1):
        wait_complete(r, batch, 30, tmp_path)
    check = assert_exactly_once(server.url, batch, n)
    assert check.stats.failed == n and check.stats.error_counts == {"expired": n}
    assert all(record.error == "expired" and not record.ok for record in check.records)
    assert site.stats.total == 0


class _Marker:
    """Unpickling this creates the marker file: what an attacker's payload would run on every worker."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.timeout(60)
def test_12_pickle_payload_is_never_executed(server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path) -> None:
    """A pickle whose `__reduce__` would create a marker file is SET as `arq:job:<id>` and ZADDed to the queue;
    a worker runs.

    Invariants: the marker file stays absent; arq's result for that id records a failure (success false,
    a deserialization error); the job leaves the queue; the worker keeps running and then crawls a batch of
    N = 5 exactly once.
    """
    marker = tmp_path / "pwned"
    job_id = "evil-pickle"
    payload = pickle.dumps({"t": 1, "f": "crawl", "a": [_Marker(marker)], "k": {}, "et": 0})
    r = sync_redis(server.url)
    r.set(keys.arq_job(job_id), payload)
    r.zadd(QUEUE, {job_id: int(time.time() * 1000)})
    env = fault_env(server.url)
    n, batch = 5, "after-pickle"
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/page/{i}") for i in range(n)])
    with Workers(env, tmp_path, 1) as pool:
        assert wait_until(lambda: r.exists(keys.arq_result(job_id)), 20), tail_logs(tmp_path)
        result = unpack(r.get(keys.arq_result(job_id)))
        assert pool.procs[0].poll() is None, tail_logs(tmp_path)
        assert submit(env, path, batch)["queued"] == n
        wait_complete(r, batch, 30, tmp_path)
    print(f"\n[item 12] arq's result for the pickle job: s={result['s']} r={result['r']}")
    assert not marker.exists()
    assert result["s"] is False
    assert "deserialize" in str(result["r"]).lower(), result["r"]
    assert r.zscore(QUEUE, job_id) is None and not r.exists(keys.arq_job(job_id))
    assert_exactly_once(server.url, batch, n)
