"""The operator's batch commands: `list`, `cancel`, `pause`, `resume` and `delete` (over `Client`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from crawlq.control import ControlOutcome
from crawlq.models import BatchStats
from crawlq_cli.main import _client_command, cli

if TYPE_CHECKING:
    from producer.client import Client

__all__ = ["batch_list", "cancel", "delete", "pause", "resume"]


def _outcome(outcome: ControlOutcome, as_json: bool) -> int:
    if as_json:
        click.echo(orjson.dumps({"batch": outcome.batch, "changed": outcome.changed, "message": outcome.message}))
    else:
        click.echo(outcome.message)
    return 0


def _row(item: BatchStats | str) -> str:
    if isinstance(item, str):
        return f"{item:<28} {'unknown':<9}"
    progress = f"{item.done}/{item.total}"
    percent = f"{100 * item.done / item.total:.0f}%" if item.total else "-"
    return f"{item.batch:<28} {item.state:<9} {progress:>15} {percent:>5} {item.priority:>8} {item.failed:>8}"


@cli.command("list")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many batches.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Batches shown.")
@click.option("--json", "as_json", is_flag=True, help='Print {"total", "offset", "limit", "batches"}.')
@_client_command
async def batch_list(client: Client, offset: int, limit: int, as_json: bool) -> int:
    """List batches, newest first, with state, progress and priority (a page of them).

    \b
    Examples:
      crawlq list
      crawlq list --offset 20 --limit 20
    """
    total, page = await client.list_batches(offset, limit)
    if as_json:
        batches = [b.model_dump() if isinstance(b, BatchStats) else {"batch": b, "state": "unknown"} for b in page]
        click.echo(orjson.dumps({"total": total, "offset": offset, "limit": limit, "batches": batches}))
        return 0
    click.echo(f"{'batch':<28} {'state':<9} {'done/total':>15} {'':>5} {'priority':>8} {'failed':>8}")
    for item in page:
        click.echo(_row(item))
    shown = f"{offset + 1}-{offset + len(page)}" if page else "none"
    click.echo(f"{shown} of {total} batches")
    return 0


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "changed", "message"}.')
@_client_command
async def cancel(client: Client, batch: str, as_json: bool) -> int:
    """Cancel BATCH: every URL not yet done is recorded as `cancelled`, and the batch completes.

    \b
    Examples:
      crawlq cancel nightly
    """
    return _outcome(await client.cancel(batch), as_json)


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "changed", "message"}.')
@_client_command
async def pause(client: Client, batch: str, as_json: bool) -> int:
    """Pause BATCH: no new fetch starts for it (within a second); fetches in flight finish.

    \b
    Examples:
      crawlq pause nightly && crawlq resume nightly
    """
    return _outcome(await client.pause(batch), as_json)


@cli.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "changed", "message"}.')
@_client_command
async def resume(client: Client, batch: str, as_json: bool) -> int:
    """Resume a paused BATCH.

    \b
    Examples:
      crawlq resume nightly
    """
    return _outcome(await client.resume(batch), as_json)


@cli.command()
@click.argument("batch")
@click.option("--force", is_flag=True, help="Cancel the batch first if it is not complete.")
@click.option("--json", "as_json", is_flag=True, help='Print {"batch", "changed", "message"}.')
@_client_command
async def delete(client: Client, batch: str, force: bool, as_json: bool) -> int:
    """Delete BATCH's results and counters from Redis; a batch not complete needs --force (it is cancelled first).

    \b
    Examples:
      crawlq delete nightly
      crawlq delete stuck-batch --force
    """
    return _outcome(await client.delete(batch, force=force), as_json)
