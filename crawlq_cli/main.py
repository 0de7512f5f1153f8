"""The `crawlq` command. A thin layer: it parses arguments and calls `producer` (submit, wait, stats,
results, status, crawl, demo) or `workers` (worker); those two never import each other.

Exit codes: 0 success; 1 runtime failure (Redis unreachable, unknown batch, `wait` timed out,
interrupted); 2 usage error, an invalid setting included (one sentence naming the variable);
3 `submit --strict` refused a batch with invalid lines.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import wraps
from typing import IO, Any, NoReturn, TypeVar

import click
import orjson
from rich.console import Console

from crawlq import __version__
from crawlq.errors import ConfigError, CrawlqError
from crawlq.models import BatchStats, UrlResult
from crawlq.settings import HostRule, Settings
from crawlq_cli.render import ProgressView, report_lines, status_table

__all__ = ["main"]

T = TypeVar("T")
EXIT_FAILURE, EXIT_USAGE, EXIT_STRICT = 1, 2, 3


def _config_error(exc: ConfigError) -> NoReturn:
    """An invalid setting: one sentence on stderr, exit 2."""
    click.echo(f"crawlq: {exc}", err=True)
    sys.exit(EXIT_USAGE)


def _run(coroutine: Awaitable[T]) -> T:
    """Run a coroutine; crawlq errors become one sentence on stderr and exit 1 (2 for a ConfigError)."""
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except ConfigError as exc:
        _config_error(exc)
    except CrawlqError as exc:
        click.echo(f"crawlq: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("crawlq: interrupted; everything this command started was stopped", err=True)
        sys.exit(130)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj["settings"]
    changes = {name: value for name, value in overrides.items() if value is not None}
    try:
        return base.replace(**changes) if changes else base
    except ConfigError as exc:
        _config_error(exc)


def _client_command(function: Callable[..., Awaitable[int | None]]) -> Callable[..., None]:
    """Open a Client from the context's settings, run the command, close the client, exit with its code."""

    @wraps(function)
    def command(**kwargs: Any) -> None:
        ctx = click.get_current_context()

        async def body() -> int | None:
            from producer.client import Client

            async with await Client.connect(_settings(ctx)) as client:
                return await function(client, **kwargs)

        sys.exit(_run(body()) or 0)

    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="crawlq")
@click.option("--redis-url", envvar="CRAWLQ_REDIS_URL", help="Redis URL (default: $CRAWLQ_REDIS_URL).")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """crawlq: fetch lists of URLs fast and politely with arq workers; every URL gets exactly one result.

    \b
    Examples:
      crawlq demo                              # local target site, 50 URLs, report
      crawlq crawl urls.txt --out results.jsonl
      crawlq worker --concurrency 50           # on each worker machine
      crawlq submit urls.txt --batch nightly && crawlq wait nightly && crawlq stats nightly
    """
    try:
        settings = Settings()
        if redis_url and redis_url != settings.redis_url:
            settings = settings.replace(redis_url=redis_url)
    except ConfigError as exc:
        _config_error(exc)
    ctx.obj = {"settings": settings, "redis_given": bool(redis_url) or "redis_url" in settings.model_fields_set}


# ---------------------------------------------------------------- worker
@cli.command()
@click.option("--concurrency", type=click.IntRange(1), help="Concurrent fetches in this process (default 10).")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--check", is_flag=True, help="Health check: exit 0 if a worker on this host is alive, else 1.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, burst: bool, check: bool) -> None:
    """Run a worker against the shared Redis; start as many as you like, anywhere.

    \b
    SIGTERM/SIGINT drain it: no new work, in-flight fetches get CRAWLQ_SHUTDOWN_GRACE_S (8 s),
    the rest goes back to the queue, then it exits 0.
    Examples:
      CRAWLQ_REDIS_URL=redis://queue:6379/0 crawlq worker --concurrency 50
      crawlq worker --check    # container health check
    """
    from workers.run import check_health, run_worker

    settings = _settings(ctx, concurrency=concurrency)
    sys.exit(check_health(settings) if check else run_worker(settings, burst=burst))


# ---------------------------------------------------------------- submit
def _report_invalid(bad: Any) -> None:
    """One stderr line for an invalid input line (its text is already escaped: see `producer.submit.printable`)."""
    click.echo(f"line {bad.line}: {bad.reason}: {bad.text}", err=True)


@contextmanager
def _read_lines(source: str) -> Iterator[Any]:
    """The input FILE (or stdin for -) as a `producer.submit.InputFile`: read as bytes, in blocks, never whole."""
    from producer.submit import open_input

    with ExitStack() as stack:
        try:
            opened = stack.enter_context(open_input(source))
        except OSError as exc:
            raise click.UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
        yield opened


@cli.command()
@click.argument("source", metavar="FILE|-")
@click.option("--batch", help="Batch id (default: a new one). Re-submitting to a batch queues only new URLs.")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "queued", "duplicates", "invalid"}.')
@click.option("--strict", is_flag=True, help="Refuse the whole batch if any line is invalid (exit 3).")
@click.pass_context
def submit(ctx: click.Context, source: str, batch: str | None, as_json: bool, strict: bool) -> None:
    """Validate, de-duplicate and enqueue the URLs of FILE (or stdin with -), one per line.

    \b
    Lines end with \\n or \\r\\n; a UTF-8 BOM at the start is skipped; blank lines and lines starting
    with # are skipped. Invalid lines (not UTF-8, a control character, not an http(s) URL...) are
    reported on stderr with their line number and reason, escaped; the valid ones are still queued
    unless --strict. The input is streamed: memory does not grow with its size.
    Examples:
      crawlq submit urls.txt
      cat urls.txt | crawlq submit - --batch nightly --json
    """
    from producer.client import Client
    from producer.submit import count_invalid, new_batch_id

    async def body() -> dict[str, object]:
        async with await Client.connect(_settings(ctx)) as client:
            report = await client.submit(
                lines.read(),
                batch or new_batch_id(),
                token=lines.token,
                expected_count=lines.lines,
                on_invalid=_report_invalid,
            )
            return report.as_dict()

    with _read_lines(source) as lines:
        if strict and (invalid := count_invalid(lines.read(), _report_invalid)):
            click.echo(f"crawlq: --strict: {invalid} invalid lines; nothing was queued", err=True)
            sys.exit(EXIT_STRICT)
        result = _run(body())
    if as_json:
        click.echo(orjson.dumps(result).decode())
    else:
        click.echo(
            f"batch {result['batch']}: queued {result['queued']}, duplicates {result['duplicates']}, "
            f"invalid {result['invalid']}"
        )


# ---------------------------------------------------------------- wait / stats / results / status
async def _wait(client: Any, batch: str, timeout: float | None, poll_s: float = 0.2) -> BatchStats:
    with ProgressView(batch) as view:
        return await client.wait(batch, timeout_s=timeout, poll_s=poll_s, on_progress=view.update)  # type: ignore[no-any-return]


@cli.command()
@click.argument("batch")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@_client_command
async def wait(client: Any, batch: str, timeout: float | None) -> int:
    """Show progress until BATCH is complete (exit 0), or until --timeout (exit 1).

    \b
    Examples:
      crawlq wait nightly
      crawlq wait nightly --timeout 600 || echo "not done yet"
    """
    try:
        await _wait(client, batch, timeout)
    except TimeoutError as exc:
        click.echo(f"crawlq: {exc}", err=True)
        return EXIT_FAILURE
    return 0


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
@_client_command
async def stats(client: Any, batch: str, as_json: bool) -> int:
    """Print BATCH's statistics: success rate, latency percentiles, status and error counts, throughput.

    \b
    Examples:
      crawlq stats nightly
      crawlq stats nightly --json | jq .p95_ms
    """
    result: BatchStats = await client.stats(batch)
    click.echo(result.model_dump_json() if as_json else "\n".join(report_lines(result)))
    return 0


CSV_FIELDS = ["url", "ok", "status", "latency_ms", "attempts", "bytes", "error", "message", "final_url", "fetched_at"]


async def _write_results(results: Any, out: IO[str], fmt: str) -> int:
    count = 0
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    async for result in results:
        record = result.to_dict() if isinstance(result, UrlResult) else result
        if writer is not None:
            writer.writerow(record)
        else:
            out.write(orjson.dumps(record).decode() + "\n")
        count += 1
    return count


@cli.command()
@click.argument("batch")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here, not stdout.")
@_client_command
async def results(client: Any, batch: str, fmt: str, output: str | None) -> int:
    """Stream one record per URL of BATCH: url, ok, status, latency_ms, attempts, bytes, error, final_url...

    \b
    Examples:
      crawlq results nightly > nightly.jsonl
      crawlq results nightly --format csv -o nightly.csv
    """
    if output is None:
        await _write_results(client.results(batch), sys.stdout, fmt)
        return 0
    with open(output, "w", newline="", encoding="utf-8") as handle:
        await _write_results(client.results(batch), handle, fmt)
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True)
@_client_command
async def status(client: Any, as_json: bool, watch: bool, interval: float) -> int:
    """Show queue depth (ready, deferred, in progress), live workers and recent batches.

    \b
    Examples:
      crawlq status
      crawlq status --json
      crawlq status --watch
    """
    console = Console()
    while True:
        snapshot = await client.status()
        if as_json:
            click.echo(orjson.dumps(snapshot).decode())
        else:
            if watch:
                console.clear()
            for part in status_table(snapshot):
                console.print(part)
        if not watch:
            return 0
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- crawl / demo
def _cancel_on_sigterm() -> None:
    """SIGTERM stops `crawl`/`demo` like Ctrl-C does: the main task is cancelled and cleans up."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def _crawl_local(
    settings: Settings, source: list[str] | Any, workers: int, redis_url: str | None, out: str | None
) -> BatchStats:
    """Crawl `source` (a list of URLs, or an input file from `_read_lines`) on a local cluster."""
    from producer.launcher import LocalCluster

    _cancel_on_sigterm()
    async with LocalCluster(settings, workers=workers, redis_url=redis_url) as cluster:
        if isinstance(source, list):
            report = await cluster.client.submit(source, on_invalid=_report_invalid)
        else:
            report = await cluster.client.submit(
                source.read(), token=source.token, expected_count=source.lines, on_invalid=_report_invalid
            )
        click.echo(f"batch {report.batch}: queued {report.queued}, duplicates {report.duplicates}, "
                   f"invalid {report.invalid}", err=True)  # fmt: skip
        final = await _wait(cluster.client, report.batch, None, poll_s=0.1)
        if out:
            fmt = "csv" if out.endswith(".csv") else "jsonl"
            with open(out, "w", newline="", encoding="utf-8") as handle:
                count = await _write_results(cluster.client.results(report.batch), handle, fmt)
            click.echo(f"wrote {count} results to {out}", err=True)
        return final


@cli.command()
@click.argument("source", metavar="FILE|-")
@click.option("--workers", type=click.IntRange(1), default=os.cpu_count() or 1, show_default="CPU count")
@click.option("--concurrency", type=click.IntRange(1), help="Concurrent fetches per worker (default 10).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write every result (.jsonl or .csv).")
@click.pass_context
def crawl(ctx: click.Context, source: str, workers: int, concurrency: int | None, out: str | None) -> None:
    """Crawl FILE on this machine: an embedded Redis (unless CRAWLQ_REDIS_URL is set), N workers, a report.

    \b
    Everything it starts is stopped at the end, Ctrl-C included.
    Examples:
      crawlq crawl urls.txt
      crawlq crawl urls.txt --workers 4 --concurrency 50 --out results.jsonl
    """
    settings = _settings(ctx, concurrency=concurrency)
    redis_url = settings.redis_url if ctx.obj["redis_given"] else None
    with _read_lines(source) as lines:
        final = _run(_crawl_local(settings, lines, workers, redis_url, out))
    click.echo("\n".join(report_lines(final)))


@cli.command()
@click.option("--urls", "count", type=click.IntRange(1), default=50, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=10, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True)
@click.pass_context
def demo(ctx: click.Context, count: int, concurrency: int, workers: int) -> None:
    """Crawl a local target site (like httpbin's /delay/0, /delay/1, /delay/2) and print the report.

    \b
    Needs no Redis, no Docker and no internet. The target is on 127.0.0.1, so the demo allows private
    addresses and raises the per-host limit for that one host to --concurrency, and says so.
    Examples:
      crawlq demo
      crawlq demo --urls 200 --concurrency 20 --workers 2
    """
    from crawlq.target import TargetSite

    rule = HostRule(pattern="127.0.0.1*", concurrency=concurrency * workers)
    settings = _settings(ctx, concurrency=concurrency, allow_private=True, host_rules=[rule])
    redis_url = settings.redis_url if ctx.obj["redis_given"] else None
    click.echo(
        f"demo: local target on 127.0.0.1; private addresses allowed; per-host limit for 127.0.0.1 raised to "
        f"{concurrency * workers}; {workers} worker(s) x concurrency {concurrency}",
        err=True,
    )

    async def body() -> BatchStats:
        async with TargetSite() as site:
            urls = [site.url(f"/delay/{i % 3}?n={i}") for i in range(count)]
            return await _crawl_local(settings, urls, workers, redis_url, None)

    final = _run(body())
    click.echo("\n".join(report_lines(final)))


def main() -> None:
    cli(prog_name="crawlq")
