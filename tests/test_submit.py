"""Submitting: reading lines (bytes, `\n`/`\r\n` only), per-line reasons with true line numbers, escaping,
the windowed de-duplication, the hold token, and the streamed enqueue against a real server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import msgpack
import redis as sync_redis
from arq.connections import ArqRedis

from crawlq import keys
from crawlq.jobs import Entry
from crawlq.settings import Settings
from crawlq.store import Store
from producer.submit import (
    HOSTS_PER_CHUNK,
    MAX_LINE_BYTES,
    InputFile,
    InvalidLine,
    LineParser,
    chunk_size_for,
    count_invalid,
    grouped_by_host,
    iter_lines,
    open_input,
    parse_lines,
    printable,
    submit_lines,
    submit_token,
)


def test_parser_keeps_line_numbers_and_dedupes_across_pieces() -> None:
    parser = LineParser()
    first = parser.feed(["http://a.test/1", "", "# comment", "http://A.test/1"])
    second = parser.feed(["not a url", "http://a.test/2", "http://a.test:80/1"])
    assert [e.url for e in first] == ["http://a.test/1"]
    assert [e.url for e in second] == ["http://a.test/2"]
    assert parser.duplicates == 2
    assert [(bad.line, bad.text) for bad in parser.invalid] == [(5, "not a url")]
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


def test_a_big_hosts_stripes_stay_spread_as_in_the_input() -> None:
    """A host whose URLs run through the whole input keeps stripes all through the queue: it is not left for
    the end while small hosts run (head-of-line blocking in reverse), and its URLs keep their order."""
    big = [Entry(f"b{i}", f"http://big.test/{i}") for i in range(400)]
    small = [Entry(f"s{i}", f"http://s{i % 200}.test/{i}") for i in range(1000)]
    mixed = [entry for pair in zip(small, big + big[:0], strict=False) for entry in pair] + small[400:]
    grouped = grouped_by_host(mixed, stripe=20)
    assert sorted(e.url_id for e in grouped) == sorted(e.url_id for e in mixed)
    positions = [at for at, entry in enumerate(grouped) if entry.url.startswith("http://big.test/")]
    gaps = [after - before for before, after in zip(positions, positions[1:], strict=False)]
    assert max(gaps) <= 200, max(gaps)  # host-by-host rounds of stripes would leave a gap of 1000
    assert [e.url for e in grouped if e.url.startswith("http://big.test/")] == [e.url for e in big]  # in order


async def test_chunks_hold_few_hosts(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    lines = [f"http://h{i % 10}.test/{i}" for i in range(1280)]  # round-robin over 10 hosts, chunks of 20
    await submit_lines(store, "grouped", lines)
    hosts_per_job = []
    for job_id in await redis.hkeys(keys.batch_jobs("grouped")):
        payload = msgpack.unpackb(await redis.get(keys.arq_job(job_id.decode())), raw=False)
        urls = [raw[1] for raw in payload["a"][1]]
        hosts_per_job.append(len({url.split("/")[2] for url in urls}))
    assert chunk_size_for(len(lines), settings) == 20 and len(hosts_per_job) == 64
    few = sum(1 for count in hosts_per_job if count <= HOSTS_PER_CHUNK)  # stripes of 4: 5 hosts a chunk
    assert few >= 0.9 * len(hosts_per_job), sorted(hosts_per_job)  # ungrouped: 10 hosts in every job


async def test_a_hosts_urls_share_chunks_across_pieces(redis: ArqRedis, settings: Settings) -> None:
    """1,000 hosts, 20 URLs each, round-robin, chunks of 100: a piece of 20 chunks holds 2 URLs of a host, but
    the grouping window (`GROUP_WINDOW`) spans pieces, so a host's URLs share one or two chunks (and one
    worker's leases) instead of ten."""
    store = Store(redis, settings.model_copy(update={"chunk_size": 100}))
    lines = [f"http://h{i % 1000}.test/{i}" for i in range(20_000)]
    await submit_lines(store, "spread", lines)
    jobs_per_host: dict[str, set[str]] = {}
    for job_id in await redis.hkeys(keys.batch_jobs("spread")):
        payload = msgpack.unpackb(await redis.get(keys.arq_job(job_id.decode())), raw=False)
        for raw in payload["a"][1]:
            jobs_per_host.setdefault(raw[1].split("/")[2], set()).add(job_id.decode())
    assert len(jobs_per_host) == 1000
    few = sum(1 for jobs in jobs_per_host.values() if len(jobs) <= 2)
    assert few >= 0.9 * len(jobs_per_host), sorted(len(jobs) for jobs in jobs_per_host.values())


def test_the_parser_window_is_bounded() -> None:
    """With a window of 3 URLs, a URL seen 3+ URLs ago is not a duplicate here (Redis counts it then)."""
    parser = LineParser(window=3)
    urls = [f"http://a.test/{i}" for i in range(10)]
    assert len(parser.feed(urls + ["http://a.test/9", "http://a.test/0"])) == 11
    assert parser.duplicates == 1


def test_iter_lines_splits_on_lf_and_crlf_only() -> None:
    data = b"a\r\nb\rc\x0cd\xc2\x85e\xe2\x80\xa8f\nlast"
    assert list(iter_lines(io.BytesIO(data))) == [b"a", b"b\rc\x0cd\xc2\x85e\xe2\x80\xa8f", b"last"]
    assert list(iter_lines(io.BytesIO(b"x\n\n"))) == [b"x", b""]
    assert list(iter_lines(io.BytesIO(b""))) == []


def test_iter_lines_across_blocks_and_bounded_on_a_huge_line() -> None:
    lines = [f"http://a.test/{i}".encode() for i in range(200_000)]  # ~4 MB: several 1 MiB blocks
    assert list(iter_lines(io.BytesIO(b"\r\n".join(lines) + b"\r\n"))) == lines
    huge = b"http://a.test/" + b"x" * (5 << 20)
    got = list(iter_lines(io.BytesIO(huge + b"\nhttp://a.test/ok\n")))
    assert got[1:] == [b"http://a.test/ok"] and MAX_LINE_BYTES < len(got[0]) < (3 << 20)


def _invalid(lines: list[bytes]) -> list[tuple[int, str, str]]:
    parser = LineParser()
    parser.feed(lines)
    return [(bad.line, bad.reason, bad.text) for bad in parser.invalid]


def test_bytes_lines_get_a_reason_with_their_true_line_number() -> None:
    data = (
        b"\xef\xbb\xbfhttp://a.test/1\r\n"  # BOM at the start: skipped
        b"http://a.test/2\rhttp://a.test/3\n"
        b"http://a.test/4\x0c\n"
        b"http://a.test/5\xc2\x85\n"
        b"http://a.test/6\xe2\x80\xa8\n"
        b"http://a.test/\xff7\n"
        b"http://a.test/8\x1b]0;evil\x07\n"
        b"# a comment in latin-1: caf\xe9\n"
        b"http://a.test/9"
    )
    parser = LineParser()
    entries = parser.feed(iter_lines(io.BytesIO(data)))
    assert [e.url for e in entries] == ["http://a.test/1", "http://a.test/9"]
    assert [(bad.line, bad.reason, bad.text) for bad in parser.invalid] == [
        (2, "control character carriage return (U+000D) in the line", "http://a.test/2\\rhttp://a.test/3"),
        (3, "control character form feed (U+000C) in the line", "http://a.test/4\\x0c"),
        (4, "control character next line (U+0085) in the line", "http://a.test/5\\x85"),
        (5, "control character line separator (U+2028) in the line", "http://a.test/6\\u2028"),
        (6, "not valid UTF-8 (byte 0xff at column 15)", "http://a.test/\\xff7"),
        (7, "control character escape (U+001B) in the line", "http://a.test/8\\x1b]0;evil\\x07"),
    ]


def test_a_bom_is_skipped_only_at_the_start() -> None:
    assert _invalid([b"\xef\xbb\xbfhttp://a.test/1"]) == []
    assert parse_lines(["\ufeffhttp://a.test/1"]).entries[0].url == "http://a.test/1"
    (bad,) = _invalid([b"http://a.test/1", b"\xef\xbb\xbfhttp://a.test/2"])
    assert bad[0] == 2


def test_bad_hosts_and_overlong_lines_get_reasons() -> None:
    lines = [b"http://xn--/", b"http://a..b/", b"http://127.0.0.1./", b"http://a.test/" + b"x" * MAX_LINE_BYTES]
    assert [(line, reason) for line, reason, _ in _invalid(lines)] == [
        (1, "invalid punycode label 'xn--' in the host"),
        (2, "empty label in the host 'a..b'"),
        (3, "trailing dot after the IP address 127.0.0.1"),
        (4, f"line longer than {MAX_LINE_BYTES} bytes"),
    ]


def test_echoed_text_is_escaped_and_cut() -> None:
    assert printable("http://a.test/\x1b]0;evil\x07") == "http://a.test/\\x1b]0;evil\\x07"
    assert printable("http://a.test/\u202eexe.txt") == "http://a.test/\\u202eexe.txt"
    assert printable("http://bücher.test/") == "http://bücher.test/"  # printable text is left alone
    assert printable("x" * 500) == "x" * 200
    (bad,) = _invalid([b"\x1b[2J\x1b]0;evil\x07 not a url"])
    assert "\x1b" not in bad[2] and "\x07" not in bad[2]


def test_count_invalid_streams_to_a_callback() -> None:
    seen: list[InvalidLine] = []
    lines = (f"http://a.test/{i}".encode() if i % 1000 else b"bad" for i in range(1, 25_001))
    assert count_invalid(lines, seen.append) == 25
    assert [bad.line for bad in seen] == list(range(1000, 25_001, 1000))


def test_submit_token_follows_the_input() -> None:
    assert submit_token(["http://a.test/1", "http://a.test/2"]) == submit_token(["http://a.test/1", "http://a.test/2"])
    assert submit_token(["http://a.test/1", "http://a.test/2"]) != submit_token(["http://a.test/12"])


def test_input_file_token_and_line_count(tmp_path: Path) -> None:
    one, same, other = tmp_path / "1.txt", tmp_path / "2.txt", tmp_path / "3.txt"
    one.write_bytes(b"http://a.test/1\nhttp://a.test/2\n")
    same.write_bytes(b"http://a.test/1\nhttp://a.test/2\n")
    other.write_bytes(b"http://a.test/1\nhttp://a.test/2")
    with open_input(str(one)) as a, open_input(str(same)) as b, open_input(str(other)) as c:
        assert a.token == b.token != c.token
        assert (a.lines, c.lines) == (2, 2)
        assert list(a.read()) == list(a.read()) == [b"http://a.test/1", b"http://a.test/2"]  # read twice
    assert InputFile.scan(io.BytesIO(b"")).lines == 0


def watched(lines: list[str], url: str, batch: str, every: int, totals: list[int]) -> Iterator[str]:
    """`lines`, noting the batch's total in Redis every `every` lines taken."""
    client = sync_redis.Redis.from_url(url)
    for number, line in enumerate(lines):
        if number % every == 0:
            totals.append(int(client.hget(keys.batch_meta(batch), "total") or 0))
        yield line


async def test_first_jobs_are_queued_while_the_rest_is_still_read(redis: ArqRedis, settings: Settings) -> None:
    n = 10_000
    lines = [f"http://a.test/p/{i}" for i in range(n)] + ["bad line", "http://a.test/p/0"]
    totals: list[int] = []
    source = watched(lines, settings.redis_url, "s1", 1000, totals)
    report = await submit_lines(Store(redis, settings), "s1", source, expected_count=len(lines))
    assert (report.queued, report.duplicates, report.invalid) == (n, 1, 1)
    assert report.invalid_lines[0].line == n + 1
    # after 5,000 lines were taken, the first pieces' jobs are in Redis but not the whole batch
    assert 0 < totals[5] < n, totals
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


async def test_duplicates_far_apart_are_counted_by_redis_and_owned_once(redis: ArqRedis, settings: Settings) -> None:
    """The producer remembers only a window of URLs; a URL repeated far beyond it is still queued once and
    counted as a duplicate once (by enqueue.lua), and no job payload carries a URL twice."""
    n = 30_000
    lines = [f"http://a.test/p/{i}" for i in range(n - 2000)]
    for i in range(2000):  # new URLs mixed with 5 URLs repeated every 10 lines: within one chunk
        lines += [f"http://a.test/new/{i}", f"http://a.test/again/{i % 5}"]
    lines += [f"http://a.test/p/{i}" for i in range(0, n - 2000, 7)] + ["http://a.test/p/5"] * 3
    report = await submit_lines(Store(redis, settings), "far", iter(lines), expected_count=len(lines))
    assert (report.queued, report.duplicates) == (n + 5, len(lines) - n - 5)
    table = await redis.hgetall(keys.batch_jobs("far"))
    owned = [url_id for ids in table.values() for url_id in ids.decode().split(",")]
    assert len(owned) == len(set(owned)) == n + 5
    for job_id in table:
        payload = msgpack.unpackb(await redis.get(keys.arq_job(job_id.decode())), raw=False)
        carried = [entry[0] for entry in payload["a"][1]]
        assert len(carried) == len(set(carried)), job_id


async def test_empty_input_makes_an_empty_batch(redis: ArqRedis, settings: Settings) -> None:
    report = await submit_lines(Store(redis, settings), "s2", ["", "# nothing"])
    assert (report.queued, report.jobs) == (0, 0)
    assert (await Store(redis, settings).stats("s2")).total == 0
