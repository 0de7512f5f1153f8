"""The `crawlq` command. A thin layer: it parses arguments and calls `producer` (submit, wait, stats,
results, status, crawl, demo) or `workers` (worker); those two never import each other.

Exit codes: 0 success; 1 runtime failure (Redis unreachable, unknown batch, `wait` timed out,
interrupted); 2 usage error, an invalid setting included (one sentence naming the variable);
3 `submit --strict` refused a batch with invalid lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import wraps
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import click
import orjson
from rich.console import Console

from crawlq import __version__
from crawlq.connection import describe
from crawlq.errors import ConfigError, CrawlqError, RedisUnavailable
from crawlq.export import RESULT_FIELDS, csv_row
from crawlq.follow import FollowOptions
from crawlq.models import BatchStats, UrlResult
from crawlq.options import BatchOptions, parse_cookie, parse_header
from crawlq.outage import REDIS_DOWN, Outage
from crawlq.settings import HostRule, Settings
from crawlq_cli.render import ProgressView, hosts_table, report_lines, status_table

if TYPE_CHECKING:  # imported when a command runs, so that `crawlq --help` stays fast
    from crawlq_local.cluster import LocalCluster
    from producer.client import Client
    from producer.submit import InputFile, InvalidLine

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

            async with await Client.connect(_settings(ctx), check_eviction=False) as client:
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
# --concurrency is checked by Settings (one sentence, exit 2), like CRAWLQ_CONCURRENCY
@click.option("--concurrency", type=int, help="Concurrent fetches in this process (default 10).")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--check", is_flag=True, help="Health check: exit 0 if a worker on this host is alive, else 1.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, burst: bool, check: bool) -> None:
    """Run a worker against the shared Redis; start as many as you like, anywhere.

    \b
    SIGTERM/SIGINT drain it: no new work, in-flight fetches get CRAWLQ_SHUTDOWN_GRACE_S (8 s),
    the rest goes back to the queue, then it exits 0.

    \b
    Examples:
      CRAWLQ_REDIS_URL=redis://queue:6379/0 crawlq worker --concurrency 50
      crawlq worker --check    # container health check
    """
    from workers.run import check_health, run_worker

    settings = _settings(ctx, concurrency=concurrency)
    sys.exit(check_health(settings) if check else run_worker(settings, burst=burst))


# ---------------------------------------------------------------- submit
def _report_invalid(bad: InvalidLine) -> None:
    """One stderr line for an invalid input line (its text is already escaped: see `producer.submit.printable`)."""
    click.echo(f"line {bad.line}: {bad.reason}: {bad.text}", err=True)


@contextmanager
def _read_lines(source: str) -> Iterator[InputFile]:
    """The input FILE (or stdin for -) as a `producer.submit.InputFile`: read as bytes, in blocks, never whole."""
    from producer.submit import open_input

    with ExitStack() as stack:
        try:
            opened = stack.enter_context(open_input(source))
        except OSError as exc:
            raise click.UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
        yield opened


def batch_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The per-batch fetch options of `submit` and `crawl`."""
    flags = [
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
                     help="Send this request header (repeatable). Credential headers are never printed."),
        click.option("--cookie", "cookies", multiple=True, metavar="NAME=VALUE",
                     help="Send this cookie (repeatable). Cookie values are never printed."),
        click.option("--user-agent", help="Replace crawlq's User-Agent (which names crawlq and its URL)."),
        click.option("--proxy", metavar="URL", help="Fetch through this http(s) proxy (its address is SSRF-checked)."),
        click.option("--recrawl-of", metavar="BATCH",
                     help="Conditional re-crawl: send the validators BATCH recorded (If-None-Match...)."),
        click.option("--follow", is_flag=True, help="Follow the links of HTML pages into the batch."),
        click.option("--max-depth", type=click.IntRange(0, 1000), metavar="N",
                     help="With --follow: add links at most N hops from a submitted URL (default 2)."),
        click.option("--scope", metavar="same-host|same-domain|REGEX",
                     help="With --follow: which links join (default same-host; a REGEX is searched in the URL)."),
        click.option("--max-pages", type=click.IntRange(1), metavar="N",
                     help="With --follow: stop adding links once the batch has N URLs."),
    ]  # fmt: skip
    for flag in reversed(flags):
        function = flag(function)
    return function


def options_from(kwargs: dict[str, Any]) -> BatchOptions:
    """The `BatchOptions` of the flags in `kwargs` (which loses them); bad values are a usage error."""
    from pydantic import ValidationError

    headers, cookies = kwargs.pop("headers"), kwargs.pop("cookies")
    try:
        return BatchOptions(
            headers=dict(parse_header(text) for text in headers),
            cookies=dict(parse_cookie(text) for text in cookies),
            user_agent=kwargs.pop("user_agent"),
            proxy=kwargs.pop("proxy"),
            recrawl_of=kwargs.pop("recrawl_of"),
            follow=_follow_from(kwargs),
        )
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise click.UsageError(reason) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _follow_from(kwargs: dict[str, Any]) -> FollowOptions | None:
    follow = kwargs.pop("follow")
    given = {name: kwargs.pop(name) for name in ("max_depth", "scope", "max_pages")}
    given = {name: value for name, value in given.items() if value is not None}
    if not follow:
        if given:
            raise click.UsageError("--max-depth, --scope and --max-pages go with --follow")
        return None
    return FollowOptions(**given)


@cli.command()
@click.argument("source", metavar="FILE|-", required=False)
@click.option(
    "--sitemap",
    "sitemaps",
    multiple=True,
    metavar="URL",
    help="Submit the URLs of this sitemap or sitemap index, gzip too (repeatable; instead of FILE).",
)
@click.option(
    "--sitemap-from-robots",
    "robots_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Submit the URLs of the sitemaps that ORIGIN's robots.txt names (repeatable).",
)
@click.option("--batch", help="Batch id (default: a new one). Re-submitting to a batch queues only new URLs.")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "queued", "duplicates", "invalid"}.')
@click.option("--strict", is_flag=True, help="Refuse the whole batch if any line is invalid (exit 3).")
@click.option("--priority", type=int, default=0, show_default=True, help="Workers claim higher-priority batches first.")
@batch_options
@click.pass_context
def submit(
    ctx: click.Context,
    /,
    source: str | None,
    sitemaps: tuple[str, ...],
    robots_origins: tuple[str, ...],
    batch: str | None,
    as_json: bool,
    strict: bool,
    priority: int,
    **flags: Any,
) -> None:
    """Validate, de-duplicate and enqueue the URLs of FILE (or stdin with -), one per line.

    \b
    Lines end with \\n or \\r\\n; a UTF-8 BOM at the start is skipped; blank lines and lines starting
    with # are skipped. Invalid lines (not UTF-8, a control character, not an http(s) URL...) are
    reported on stderr with their line number and reason, escaped; the valid ones are still queued
    unless --strict. The input is streamed: memory does not grow with its size.

    \b
    Examples:
      crawlq submit urls.txt
      cat urls.txt | crawlq submit - --batch nightly --json
      crawlq submit urls.txt --header 'Authorization: Bearer abc' --cookie session=xyz
      crawlq submit urls.txt --batch tuesday --recrawl-of monday
      crawlq submit urgent.txt --priority 10   # ahead of batches of priority 0
      crawlq submit seeds.txt --follow --max-depth 3 --scope same-domain --max-pages 10000
      crawlq submit --sitemap https://example.com/sitemap_index.xml
      crawlq submit --sitemap-from-robots https://example.com --follow
    """
    from producer.submit import count_invalid, new_batch_id

    options = options_from(flags)
    if (source is None) == (not sitemaps and not robots_origins):
        raise click.UsageError("give a FILE (or - for stdin), or --sitemap/--sitemap-from-robots, not both")

    async def body() -> dict[str, object]:
        async with await _submit_client(_settings(ctx)) as client:
            report = await client.submit(
                lines.read(),
                batch or new_batch_id(),
                token=lines.token,
                expected_count=lines.lines,
                on_invalid=_report_invalid,
                options=options,
                priority=priority,
            )
            return report.as_dict()

    if source is None:
        result = _run(_submit_sitemaps(_settings(ctx), sitemaps, robots_origins, batch, options))
        _print_submit(result, as_json)
        return
    with _read_lines(source) as lines:
        if strict and (invalid := count_invalid(lines.read(), _report_invalid)):
            click.echo(f"crawlq: --strict: {invalid} invalid lines; nothing was queued", err=True)
            sys.exit(EXIT_STRICT)
        result = _run(body())
    _print_submit(result, as_json)


def _print_submit(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(result).decode())
    else:
        click.echo(
            f"batch {result['batch']}: queued {result['queued']}, duplicates {result['duplicates']}, "
            f"invalid {result['invalid']}"
        )


async def _submit_sitemaps(
    settings: Settings, sitemaps: tuple[str, ...], origins: tuple[str, ...], batch: str | None, options: BatchOptions
) -> dict[str, object]:
    """Read the sitemaps (a sitemap that cannot be read: one sentence, exit 2) and submit their URLs."""
    from producer.sitemaps import SitemapError, sitemap_urls
    from producer.submit import new_batch_id

    try:
        urls = await sitemap_urls(settings, sitemaps, origins)
    except SitemapError as exc:
        raise click.UsageError(str(exc)) from None
    async with await _submit_client(settings) as client:
        report = await client.submit(urls, batch or new_batch_id(), on_invalid=_report_invalid, options=options)
        return report.as_dict()


# ---------------------------------------------------------------- wait / stats / results / status
def _say(line: str) -> None:
    click.echo(f"crawlq: {line}", err=True)


SUBMIT_START_WINDOW_S = 2.0  #: a submit's first command retries a dropped connection this long, no more


async def _submit_client(settings: Settings) -> Client:
    """A submit's client: its calls (each idempotent, see `Store.enqueue`) are sent again within
    `redis_retry_window_s`, with one line when an outage starts and one when it ends; its first command only
    within `SUBMIT_START_WINDOW_S`."""
    from producer.client import Client

    outage = Outage(describe(settings.redis_url), settings.redis_retry_window_s, _say)
    return await Client.connect(settings, outage=outage, start_window_s=SUBMIT_START_WINDOW_S)


NO_WORKER_CHECK_S = 5.0  #: how often `wait` looks for live workers (heartbeats)
WORKER_EXIT_CHECK_S = 0.5  #: how often `crawl` and `demo` look for their own workers' exits


async def _wait(client: Client, batch: str, timeout: float | None, poll_s: float = 0.2) -> BatchStats:
    watch = asyncio.create_task(_watch_workers(client, describe(client.settings.redis_url)))
    try:
        with ProgressView(batch) as view:
            return await client.wait(batch, timeout_s=timeout, poll_s=poll_s, on_progress=view.update, on_outage=_say)
    finally:
        watch.cancel()


async def _watch_workers(client: Client, where: str) -> None:
    """Say so, once per spell, when no worker sends heartbeats: a batch then waits without a word."""
    warned = False
    while True:
        await asyncio.sleep(NO_WORKER_CHECK_S)
        try:
            alive = bool(await client.workers())
        except Exception:  # an outage is reported by `wait` itself
            continue
        if not alive and not warned:
            _say(f"no live worker sends heartbeats to Redis at {where}; the batch waits until one runs (crawlq worker)")
        elif alive and warned:
            _say("a worker is alive again")
        warned = not alive


@cli.command()
@click.argument("batch")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@_client_command
async def wait(client: Client, batch: str, timeout: float | None) -> int:
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
async def stats(client: Client, batch: str, as_json: bool) -> int:
    """Print BATCH's statistics: success rate, latency percentiles, status and error counts, throughput.

    \b
    Examples:
      crawlq stats nightly
      crawlq stats nightly --json | jq .p95_ms
    """
    result: BatchStats = await client.stats(batch)
    click.echo(result.model_dump_json() if as_json else "\n".join(report_lines(result)))
    return 0


FORMATS = ["jsonl", "csv", "urls"]


async def _write_results(
    results: AsyncIterator[UrlResult] | AsyncIterator[dict[str, Any]],
    out: IO[str],
    fmt: str,
    *,
    failed_only: bool = False,
) -> int:
    """Write `results` as JSON lines, CSV or bare URLs (one per line, ready to submit again)."""
    count = 0
    writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, extrasaction="ignore") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    async for result in results:
        record = result.to_dict() if isinstance(result, UrlResult) else result
        if failed_only and record["ok"]:
            continue
        if writer is not None:
            writer.writerow(csv_row(record))
        elif fmt == "urls":
            out.write(record["url"] + "\n")
        else:
            out.write(orjson.dumps(record).decode() + "\n")
        count += 1
    return count


@cli.command()
@click.argument("batch")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
    help="jsonl and csv: one record per URL; urls: the bare URLs, one per line (input for a new batch).",
)
@click.option("--failed", "failed_only", is_flag=True, help="Only the URLs that failed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here, not stdout.")
@_client_command
async def results(client: Client, batch: str, fmt: str, failed_only: bool, output: str | None) -> int:
    """Stream one record per URL of BATCH: url, ok, status, latency_ms, attempts, bytes, error, final_url...

    \b
    Examples:
      crawlq results nightly > nightly.jsonl
      crawlq results nightly --format csv -o nightly.csv
      crawlq results nightly --failed --format urls | crawlq submit - --batch nightly-retry
    """
    if output is None:
        await _write_results(client.results(batch), sys.stdout, fmt, failed_only=failed_only)
        return 0
    with open(output, "w", newline="", encoding="utf-8") as handle:
        await _write_results(client.results(batch), handle, fmt, failed_only=failed_only)
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True)
@_client_command
async def status(client: Client, as_json: bool, watch: bool, interval: float) -> int:
    """Show queue depth in URLs (ready, deferred, in flight; jobs beside), live workers with their pages/s over
    the last minute, recent batches with progress, failures and ETA, and the busiest hosts.

    \b
    Examples:
      crawlq status
      crawlq status --json
      crawlq status --watch
    """
    console = Console()
    outage = Outage(describe(client.settings.redis_url), client.settings.redis_retry_window_s, _say)
    while True:
        try:
            snapshot = await client.status()
        except REDIS_DOWN as exc:
            if not watch:
                where = describe(client.settings.redis_url)
                raise RedisUnavailable(f"lost Redis at {where} ({type(exc).__name__})") from exc
            outage.failed(exc)  # one line at the start; RedisUnavailable once the retry window is over
            await asyncio.sleep(min(interval, 1.0))
            continue
        outage.recovered()
        if as_json:
            click.echo(orjson.dumps(snapshot.to_dict()).decode())
        else:
            if watch:
                console.clear()
            for part in status_table(snapshot):
                console.print(part)
        if not watch:
            return 0
        await asyncio.sleep(interval)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per host, one a line.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Show at most this many hosts.")
@click.pass_context
def hosts(ctx: click.Context, /, as_json: bool, limit: int) -> None:
    """List hosts with politeness state, busiest first: requests in flight, limit, delay, cooldown left; and
    the host rules set at run time (`crawlq hosts set`).

    \b
    The limit is the first matching rule: the run-time rules, then CRAWLQ_HOST_RULES, else
    CRAWLQ_PER_HOST_CONCURRENCY, as this command's settings give them (the workers' when they share them).

    \b
    Examples:
      crawlq hosts
      crawlq hosts --json | jq 'select(.cooldown_s > 0)'
      crawlq hosts set '*.example.com' --concurrency 4 --delay 0.5
      crawlq hosts unset '*.example.com'
    """
    if ctx.invoked_subcommand is None:
        _list_hosts(as_json=as_json, limit=limit)


@_client_command
async def _list_hosts(client: Client, as_json: bool, limit: int) -> int:
    from crawlq.hostrules import read_rules

    found = await client.hosts()
    if as_json:
        for host in found[:limit]:
            click.echo(orjson.dumps(host.as_dict()).decode())
        return 0
    for rule in await read_rules(client.redis):
        click.echo(f"run-time rule {rule.pattern}: {_rule_text(rule)}")
    if not found:
        click.echo("no host has politeness state (nothing fetched recently)")
        return 0
    Console().print(hosts_table(found[:limit], len(found)))
    return 0


def _rule_text(rule: HostRule) -> str:
    concurrency = "default" if rule.concurrency is None else str(rule.concurrency)
    delay = "default" if rule.delay_s is None else f"{rule.delay_s:g} s"
    return f"concurrency {concurrency}, delay {delay}"


@hosts.command(name="set")
@click.argument("pattern")
@click.option("--concurrency", type=click.IntRange(1), help="Requests in flight on a matching host, cluster-wide.")
@click.option("--delay", type=click.FloatRange(0), help="Seconds between request starts on a matching host.")
@_client_command
async def hosts_set(client: Client, pattern: str, concurrency: int | None, delay: float | None) -> int:
    """Set a host rule for the whole cluster now: every worker applies it within a second, before
    CRAWLQ_HOST_RULES (first match wins). PATTERN is an fnmatch pattern on the host (`*.example.com`,
    `127.0.0.1*` for every port).

    \b
    Examples:
      crawlq hosts set '*.example.com' --concurrency 4
      crawlq hosts set slow.example.org --concurrency 1 --delay 2
    """
    from crawlq.hostrules import set_rule

    if concurrency is None and delay is None:
        raise click.UsageError("give --concurrency, --delay or both")
    rule = HostRule(pattern=pattern, concurrency=concurrency, delay_s=delay)
    await set_rule(client.redis, rule)
    click.echo(f"host rule {pattern}: {_rule_text(rule)} (workers apply it within a second)")
    return 0


@hosts.command(name="unset")
@click.argument("pattern")
@_client_command
async def hosts_unset(client: Client, pattern: str) -> int:
    """Remove a run-time host rule; matching hosts go back to CRAWLQ_HOST_RULES and the defaults."""
    from crawlq.hostrules import unset_rule

    if not await unset_rule(client.redis, pattern):
        click.echo(f"no run-time host rule for {pattern} (crawlq hosts lists them)")
        return 1
    click.echo(f"host rule {pattern} removed")
    return 0


# ---------------------------------------------------------------- crawl / demo
@cli.command(name="export")
@click.argument("batch")
@click.argument("directory", type=click.Path(file_okay=False))
@_client_command
async def export(client: Client, batch: str, directory: str) -> int:
    """Write BATCH's records to DIRECTORY/records.jsonl and their stored bodies to DIRECTORY/bodies/.

    \b
    Each body is written once, as DIRECTORY/bodies/<content_sha256> (decompressed); its records name it
    in `body_file`. Bodies are kept only with CRAWLQ_STORE_BODIES set (dir:/path or redis) on the workers.

    \b
    Examples:
      crawlq export nightly ./nightly-export
    """
    from crawlq.bodies import read_body

    root = os.path.abspath(directory)
    try:
        os.makedirs(os.path.join(root, "bodies"), exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create {root}: {exc.strerror}") from None
    records = bodies = missing = 0
    with open(os.path.join(root, "records.jsonl"), "wb") as out:
        async for result in client.results(batch):
            row = result.to_dict()
            ref = row.get("body_ref")
            if ref:
                name: str | None = os.path.join("bodies", str(row["content_sha256"]))
                if name is not None and not os.path.exists(os.path.join(root, name)):
                    body = await read_body(ref, client.redis)
                    if body is None:
                        missing += 1
                        name = None
                    else:
                        with open(os.path.join(root, name), "wb") as handle:
                            handle.write(body)
                        bodies += 1
                row["body_file"] = name
            out.write(orjson.dumps(row) + b"\n")
            records += 1
    gone = f"; {missing} bodies were gone (expired or deleted)" if missing else ""
    click.echo(f"wrote {records} records and {bodies} bodies to {root}{gone}", err=True)
    return 0


def _cancel_on_sigterm() -> None:
    """SIGTERM stops `crawl`/`demo` like Ctrl-C does: the main task is cancelled and cleans up."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def _crawl_local(
    settings: Settings,
    source: list[str] | InputFile,
    workers: int,
    redis_url: str | None,
    out: str | None,
    options: BatchOptions | None = None,
) -> BatchStats:
    """Submit `source` (a list of URLs, or an input file from `_read_lines`) to a local cluster, show progress, keep
    the results in `out` (`""`: not kept; None: a file named after the batch), and say when per-host limits
    rather than the workers bounded the crawl."""
    from crawlq_local.cluster import LocalCluster

    _cancel_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="crawlq-crawl-") as logs:
        async with LocalCluster(settings, workers=workers, redis_url=redis_url, log_dir=logs) as cluster:
            if isinstance(source, list):
                report = await cluster.client.submit(source, on_invalid=_report_invalid, options=options)
            else:
                report = await cluster.client.submit(
                    source.read(),
                    token=source.token,
                    expected_count=source.lines,
                    on_invalid=_report_invalid,
                    options=options,
                )
            click.echo(f"batch {report.batch}: queued {report.queued}, duplicates {report.duplicates}, "
                       f"invalid {report.invalid}", err=True)  # fmt: skip
            final = await _wait_local(cluster, report.batch)
            hosts: collections.Counter[str] = collections.Counter()
            records = _counting_hosts(cluster.client.results(report.batch), hosts)
            path = f"{report.batch}.jsonl" if out is None else out
            if path:
                fmt = "csv" if path.endswith(".csv") else "jsonl"
                with open(path, "w", newline="", encoding="utf-8") as handle:
                    count = await _write_results(records, handle, fmt)
                click.echo(f"wrote {count} results to {os.path.abspath(path)}", err=True)
            else:
                async for _ in records:
                    pass
                click.echo("results not kept: they go with the embedded Redis", err=True)
            note = host_bound_note(settings, hosts, workers)
            if note:
                click.echo(note, err=True)
            return final


async def _wait_local(cluster: LocalCluster, batch: str) -> BatchStats:
    """`_wait`, watching the cluster's own worker processes: one that exits is reported with its log's last
    line; when none is left, the crawl stops with a sentence instead of waiting for ever."""
    from crawlq_local.cluster import WorkersExited

    waiting = asyncio.create_task(_wait(cluster.client, batch, None, poll_s=0.1))
    reported: set[int] = set()
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=WORKER_EXIT_CHECK_S)
            for index, code in cluster.exited():
                if index not in reported:
                    reported.add(index)
                    why = cluster.log_tail(index) or "it left no log line"
                    _say(f"worker {index + 1} of {len(cluster.processes)} exited with code {code}: {why}")
            if len(reported) == len(cluster.processes) and not waiting.done():
                raise WorkersExited(f"every worker exited, so batch {batch} cannot go on (see above)")
        return waiting.result()
    finally:
        waiting.cancel()
        with contextlib.suppress(BaseException):
            await waiting


async def _counting_hosts(
    results: AsyncIterator[UrlResult], hosts: collections.Counter[str]
) -> AsyncIterator[UrlResult]:
    async for result in results:
        hosts[urlsplit(result.url).netloc.lower()] += 1
        yield result


def host_bound_note(settings: Settings, hosts: collections.Counter[str], workers: int) -> str:
    """A sentence when the per-host limits allowed fewer fetches at once than the workers had slots, else ""."""
    from workers.gate import host_limits

    slots = workers * settings.concurrency
    allowed = sum(min(count, host_limits(settings, host)[0]) for host, count in hosts.items())
    if not hosts or allowed >= slots:
        return ""
    return (
        f"note: per-host limits, not the workers, bounded this crawl: its {len(hosts)} host(s) allowed at most "
        f"{allowed} fetches at once while the workers had {slots} slots; if the sites allow it, raise "
        f"--per-host (CRAWLQ_PER_HOST_CONCURRENCY, now {settings.per_host_concurrency}) or CRAWLQ_HOST_RULES"
    )


@cli.command()
@click.argument("source", metavar="FILE|-")
@click.option("--workers", type=click.IntRange(1), default=os.cpu_count() or 1, show_default="CPU count")
@click.option("--concurrency", type=click.IntRange(1), help="Concurrent fetches per worker (default 10).")
@click.option("--per-host", type=click.IntRange(1), help="Requests in flight per host (default 2).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write every result here (.jsonl or .csv); default: BATCH.jsonl in this directory.")  # fmt: skip
@click.option("--no-out", is_flag=True, help="Do not keep the results (they go with the embedded Redis).")
@batch_options
@click.pass_context
def crawl(
    ctx: click.Context,
    /,
    source: str,
    workers: int,
    concurrency: int | None,
    per_host: int | None,
    out: str | None,
    no_out: bool,
    **flags: Any,
) -> None:
    """Crawl FILE on this machine: an embedded Redis (unless CRAWLQ_REDIS_URL is set), N workers, a report.

    \b
    Everything it starts is stopped at the end, Ctrl-C included. The results are written to BATCH.jsonl
    (or --out) before the embedded Redis stops.

    \b
    Examples:
      crawlq crawl urls.txt
      crawlq crawl urls.txt --workers 4 --concurrency 50 --per-host 4 --out results.jsonl
    """
    options = options_from(flags)
    settings = _settings(ctx, concurrency=concurrency, per_host_concurrency=per_host)
    redis_url = settings.redis_url if ctx.obj["redis_given"] else None
    with _read_lines(source) as lines:
        final = _run(_crawl_local(settings, lines, workers, redis_url, "" if no_out else out, options))
    click.echo("\n".join(report_lines(final)))


@cli.command()
@click.option("--urls", "count", type=click.IntRange(1), default=50, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=10, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--per-host", type=click.IntRange(1), help="Requests in flight to the local site (default: all slots).")
@click.pass_context
def demo(ctx: click.Context, count: int, concurrency: int, workers: int, per_host: int | None) -> None:
    """Crawl a local target site (like httpbin's /delay/0, /delay/1, /delay/2) and print the report.

    \b
    Needs no Redis, no Docker and no internet. The target is on 127.0.0.1, so the demo allows the loopback
    networks and raises the per-host limit for that one host to --per-host (default: workers x
    concurrency, where the default for other sites is 2), and says so.

    \b
    Examples:
      crawlq demo
      crawlq demo --urls 200 --concurrency 20 --workers 2
      crawlq demo --per-host 2      # what the default politeness does to one host
    """
    from crawlq_local.target import TargetSite

    limit = per_host or concurrency * workers
    rule = HostRule(pattern="127.0.0.1*", concurrency=limit)
    settings = _settings(ctx, concurrency=concurrency, allowed_networks=["127.0.0.0/8", "::1/128"], host_rules=[rule])
    redis_url = settings.redis_url if ctx.obj["redis_given"] else None
    click.echo(
        f"demo: local target on 127.0.0.1; loopback (127.0.0.0/8, ::1) allowed; per-host limit for 127.0.0.1 "
        f"raised to {limit} (--per-host); {workers} worker(s) x concurrency {concurrency}",
        err=True,
    )

    async def body() -> BatchStats:
        async with TargetSite() as site:
            urls = [site.url(f"/delay/{i % 3}?n={i}") for i in range(count)]
            return await _crawl_local(settings, urls, workers, redis_url, "")

    final = _run(body())
    click.echo("\n".join(report_lines(final)))


# ---------------------------------------------------------------- serve
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve the HTTP API (needs `pip install "crawlq[api]"` and CRAWLQ_API_TOKEN).

    \b
    OpenAPI schema at /openapi.json; Prometheus metrics at /metrics.
    Examples:
      CRAWLQ_API_TOKEN=secret crawlq serve --port 8000
      curl -H "Authorization: Bearer secret" localhost:8000/queue
    """
    try:
        import uvicorn

        from crawlq_api.app import create_app
        from crawlq_api.settings import ApiSettings
    except ImportError as exc:
        raise click.UsageError(
            f'the HTTP API needs its extra: pip install "crawlq[api]" ({exc.name} is missing)'
        ) from exc
    try:
        app = create_app(_settings(ctx), ApiSettings())
    except (CrawlqError, ValueError) as exc:
        click.echo(f"crawlq: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    uvicorn.run(app, host=host, port=port, log_level="info")


def main() -> None:
    cli(prog_name="crawlq")


from crawlq_cli import control as _control  # noqa: E402,F401  (registers list, cancel, pause, resume, delete)
