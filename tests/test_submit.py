"""Submitting: line parsing across pieces, and the streamed enqueue against a real server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import msgpack
import redis as sync_redis
from arq.connections import ArqRedis

from crawlq import keys
from crawlq.jobs import Entry
from crawlq.settings import Settings
from crawlq.store import Store
from producer.submit import LineParser, chunk_size_for, grouped_by_host, parse_lines, submit_lines, submit_token


def test_parser_keeps_line_numbers_and_dedupes_across_pieces() -> None:
    parser = LineParser()
    first = parser.feed(["http://a.test/1", "", "# comment", "http://A.test/1"])
    second = parser.feed(["not a url", "http://a.test/2", "http://a.test:80/1"])
    assert [e.url for e in first] == ["http://a.test/1"]
    assert [e.url for e in second] == ["http://a.test/2"]
    assert parser.parsed.duplicates == 2
    assert [(bad.line, bad.text) for bad in parser.parsed.invalid] == [(5, "not a url")]
    assert parse_lines(["http://a.test/1", "not a url", "http://a.test/2", "http://a.test/1"]).duplicates == 1


def test_a_piece_is_grouped_by_host_in_order_of_first_appearance() -> None:
    urls = [f"http://h{i % 3}.test/{i}" for i in range(9)] + ["http://h0.test:8080/x"]
    entries = [Entry(str(i), url) for i, url in enumerate(urls)]
    grouped = grouped_by_host(entries)
    assert [e.url for e in grouped] == [
        "http://h0.test/0", "http://h0.test/3", "http://h0.test/6",
        "http://h1.test/1", "http://h1.test/4", "http://h1.test/7",
        "http://h2.test/2", "http://h2.test/5", "http://h2.test/8",
        "http://h0.test:8080/x",
    ]  # fmt: skip
    assert sorted(e.url_id for e in grouped) == sorted(e.url_id for e in entries)
    assert grouped_by_host([]) == []


async def test_chunks_hold_few_hosts(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    lines = [f"http://h{i % 10}.test/{i}" for i in range(4000)]  # round-robin over 10 hosts, chunks of 20
    await submit_lines(store, "grouped", lines)
    hosts_per_job = []
    for job_id in await redis.hkeys(keys.batch_jobs("grouped")):
        payload = msgpack.unpackb(await redis.get(keys.arq_job(job_id.decode())), raw=False)
        urls = [raw[1] for raw in payload["a"][1]]
        hosts_per_job.append(len({url.split("/")[2] for url in urls}))
    assert len(hosts_per_job) == 200
    few = sum(1 for count in hosts_per_job if count <= 2)
    assert few >= 0.9 * len(hosts_per_job), sorted(hosts_per_job)  # ungrouped: 10 hosts in every job


def test_submit_token_follows_the_input() -> None:
    assert submit_token(["http://a.test/1", "http://a.test/2"]) == submit_token(["http://a.test/1", "http://a.test/2"])
    assert submit_token(["http://a.test/1", "http://a.test/2"]) != submit_token(["http://a.test/12"])


class WatchedLines(Sequence[str]):
    """Lines that note the batch's total in Redis each time the submit takes a piece of them."""

    def __init__(self, lines: list[str], url: str, batch: str) -> None:
        self.lines = lines
        self.redis = sync_redis.Redis.from_url(url)
        self.batch = batch
        self.totals_seen: list[int] = []

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            self.totals_seen.append(int(self.redis.hget(keys.batch_meta(self.batch), "total") or 0))
        return self.lines[index]


async def test_first_jobs_are_queued_while_the_rest_is_still_parsed(redis: ArqRedis, settings: Settings) -> None:
    n = 10_000
    lines = [f"http://a.test/p/{i}" for i in range(n)] + ["bad line", "http://a.test/p/0"]
    watched = WatchedLines(lines, settings.redis_url, "s1")
    report = await submit_lines(Store(redis, settings), "s1", watched)
    assert (report.queued, report.duplicates, report.invalid) == (n, 1, 1)
    assert report.invalid_lines[0].line == n + 1
    # when the third piece is taken, the first piece's jobs are in Redis but not the whole batch
    assert len(watched.totals_seen) >= 3 and 0 < watched.totals_seen[2] < n, watched.totals_seen
    size = chunk_size_for(len(lines), settings)
    table = await redis.hgetall(keys.batch_jobs("s1"))
    sizes = sorted(len(ids.split(b",")) for ids in table.values())
    assert sizes == sorted([size] * (n // size) + ([n % size] if n % size else []))  # chunks span pieces
    queued_ids: set[str] = set()
    for job_id in table:
        payload = msgpack.unpackb(await redis.get(keys.arq_job(job_id.decode())), raw=False)
        queued_ids.update(entry[0] for entry in payload["a"][1])
    assert len(queued_ids) == n
    stats = await Store(redis, settings).stats("s1")
    assert stats.total == n and not stats.complete


async def test_empty_input_makes_an_empty_batch(redis: ArqRedis, settings: Settings) -> None:
    report = await submit_lines(Store(redis, settings), "s2", ["", "# nothing"])
    assert (report.queued, report.jobs) == (0, 0)
    assert (await Store(redis, settings).stats("s2")).total == 0
