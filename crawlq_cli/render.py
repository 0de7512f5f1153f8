"""How the CLI shows things: the batch report, progress (a bar on a terminal, plain lines otherwise), status."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crawlq.models import BatchStats

if TYPE_CHECKING:
    from rich.progress import TaskID

    from crawlq.heartbeats import Heartbeat
    from producer.cluster import ClusterStatus, HostState, QueueUrls

__all__ = ["ProgressView", "eta_s", "hosts_table", "report_lines", "status_table"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "-"


def report_lines(stats: BatchStats) -> list[str]:
    rate = "-" if stats.success_rate is None else f"{stats.success_rate * 100:.1f} %"
    lost = [f"  lost         {stats.lost_reason}"] if stats.lost_reason else []
    lines = [
        f"batch {stats.batch}: {stats.state}",
        *lost,
        f"  succeeded    {stats.succeeded}/{stats.total} ({rate}); failed {stats.failed}; pending {stats.pending}",
        f"  latency      avg {_ms(stats.avg_latency_ms)}   p50 {_ms(stats.p50_ms)}   p95 {_ms(stats.p95_ms)}"
        f"   p99 {_ms(stats.p99_ms)}",
        f"  statuses     {_counts(stats.status_counts)}",
        f"  errors       {_counts(stats.error_counts)}",
        f"  total time   {stats.elapsed_s if stats.elapsed_s is not None else '-'} s"
        f"   pages/s {stats.pages_per_s if stats.pages_per_s is not None else '-'}",
    ]
    if stats.unchanged:
        lines.append(f"  unchanged    {stats.unchanged} (re-crawl: 304 or the same content_sha256)")
    if stats.discovered:
        depths = ", ".join(f"{depth}: {count}" for depth, count in stats.depth_counts.items())
        lines.append(f"  discovered   {stats.discovered} by following links (URLs by depth: {depths})")
    return lines


def eta_s(stats: BatchStats) -> float | None:
    """Seconds left at the batch's pages/s so far; None when complete or not yet measurable."""
    if stats.complete or not stats.pages_per_s:
        return None
    return stats.pending / stats.pages_per_s


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = width if not total else int(width * done / total)
    return "#" * filled + "." * (width - filled)


class ProgressView:
    """A rich progress bar when stderr is a terminal, else one plain line per `every_s` seconds."""

    def __init__(self, label: str, every_s: float = 1.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.label = label

    def __enter__(self) -> ProgressView:
        if self.tty:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, rate="", failed="", eta="")
        return self

    def update(self, stats: BatchStats) -> None:
        if self._progress is not None and self._task is not None:
            rate = f"{stats.pages_per_s:.0f}/s" if stats.pages_per_s else ""
            failed = f"[red]{stats.failed} failed[/]" if stats.failed else "0 failed"
            eta = f"ETA {_duration(eta_s(stats))}" if eta_s(stats) is not None else ""
            self._progress.update(
                self._task, total=stats.total, completed=stats.done, rate=rate, failed=failed, eta=eta
            )
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or stats.complete:
            self._last = now
            eta = f", ETA {_duration(eta_s(stats))}" if eta_s(stats) is not None else ""
            print(
                f"{self.label}: {stats.done}/{stats.total} done ({stats.failed} failed{eta})",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def hosts_table(hosts: list[HostState], total: int | None = None) -> Table:
    """Host state, busiest first: in flight against the limit, delay, cooldown left."""
    shown = f"busiest {len(hosts)} of {total} hosts" if total is not None and total > len(hosts) else "hosts"
    table = Table(title=shown)
    for column in ("host", "in flight", "limit", "delay", "cooldown"):
        table.add_column(column)
    for host in hosts:
        at_limit = host.in_flight >= host.limit
        table.add_row(
            host.host, f"[yellow]{host.in_flight}[/]" if at_limit else str(host.in_flight), str(host.limit),
            f"{host.delay_s:g} s" if host.delay_s else "-",
            f"[yellow]{_duration(host.cooldown_s)}[/]" if host.cooldown_s else "-",
        )  # fmt: skip
    return table


def _queue_line(queue: QueueUrls) -> str:
    urls, jobs = queue.urls(), queue.jobs()
    return (
        f"queue: [bold]{urls['ready']:,}[/] URLs ready, {urls['deferred']:,} deferred, {urls['in_flight']:,} in flight"
        f"  [dim]({jobs['ready']} / {jobs['deferred']} / {jobs['in_flight']} jobs)[/]"
    )


def _workers_table(beats: list[Heartbeat]) -> Table:
    total_rate = sum(beat.pages_per_s_1m or 0 for beat in beats)
    workers = Table(title=f"workers ({len(beats)} live, {total_rate:.1f} pages/s over the last minute)")
    for column in ("id", "in flight", "pages/s (1 min)", "done", "draining"):
        workers.add_column(column)
    for beat in beats:
        rate = beat.pages_per_s_1m
        workers.add_row(
            beat.id, f"{beat.in_flight}/{beat.concurrency}", "-" if rate is None else f"{rate:.1f}",
            str(beat.urls_done), "yes" if beat.draining else "",
        )  # fmt: skip
    return workers


def _batches_table(batches: list[BatchStats | str]) -> Table:
    table = Table(title="recent batches")
    for column in ("batch", "state", "progress", "done", "failed", "pages/s", "ETA"):
        table.add_column(column)
    for stats in batches:
        if not isinstance(stats, BatchStats):
            table.add_row(stats, "unknown", "", "?", "?", "-", "-")
            continue
        table.add_row(
            stats.batch, stats.state, _bar(stats.done, stats.total), f"{stats.done:,}/{stats.total:,}",
            f"[red]{stats.failed:,}[/]" if stats.failed else "0", f"{stats.pages_per_s or 0:.1f}",
            "done" if stats.complete else _duration(eta_s(stats)),
        )  # fmt: skip
    return table


def status_table(status: ClusterStatus) -> list[Table | str]:
    """`crawlq status`: queue depth in URLs (and jobs), workers, recent batches, the busiest hosts."""
    out: list[Table | str] = [_queue_line(status.queue), _workers_table(status.workers)]
    out.append(_batches_table(status.batches))
    out += [f"[yellow]{batch}[/]: {note}" for batch, note in status.notes.items()]
    if status.hosts:
        out.append(hosts_table(status.hosts, status.hosts_total))
    return out
