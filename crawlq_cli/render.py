"""How the CLI shows things: the batch report, progress (a bar on a terminal, plain lines otherwise), status."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crawlq.models import BatchStats

__all__ = ["ProgressView", "report_lines", "status_table"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "-"


def report_lines(stats: BatchStats) -> list[str]:
    rate = "-" if stats.success_rate is None else f"{stats.success_rate * 100:.1f} %"
    lost = [f"  lost         {stats.lost_reason}"] if stats.lost_reason else []
    return [
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


class ProgressView:
    """A rich progress bar when stderr is a terminal, else one plain line per `every_s` seconds."""

    def __init__(self, label: str, every_s: float = 1.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0
        self._progress: Progress | None = None
        self._task: Any = None
        self.label = label

    def __enter__(self) -> ProgressView:
        if self.tty:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, rate="")
        return self

    def update(self, stats: BatchStats) -> None:
        if self._progress is not None:
            rate = f"{stats.pages_per_s:.0f}/s" if stats.pages_per_s else ""
            self._progress.update(self._task, total=stats.total, completed=stats.done, rate=rate)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or stats.complete:
            self._last = now
            print(f"{self.label}: {stats.done}/{stats.total} done ({stats.failed} failed)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def status_table(status: dict[str, Any]) -> list[Table | str]:
    queue = status["queue"]
    out: list[Table | str] = [
        f"queue: {queue['ready']} ready, {queue['deferred']} deferred, {queue['in_progress']} in progress "
        f"({queue['total']} jobs)"
    ]
    workers = Table(title=f"workers ({len(status['workers'])} live)")
    for column in ("id", "concurrency", "in flight", "pending", "fetches", "draining"):
        workers.add_column(column)
    for beat in status["workers"]:
        workers.add_row(
            str(beat["id"]), str(beat["concurrency"]), str(beat["in_flight"]), str(beat["pending"]),
            str(beat["fetches"]), "yes" if beat["draining"] else "",
        )  # fmt: skip
    out.append(workers)
    batches = Table(title="recent batches")
    for column in ("batch", "state", "done", "total", "failed", "pages/s"):
        batches.add_column(column)
    for batch in status["batches"]:
        batches.add_row(
            batch["batch"], batch["state"], str(batch.get("done", "?")), str(batch.get("total", "?")),
            str(batch.get("failed", "?")), str(batch.get("pages_per_s") or "-"),
        )  # fmt: skip
    out.append(batches)
    return out
