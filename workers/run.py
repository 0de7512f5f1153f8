"""Starting a worker process: `crawlq worker` and `python -m workers` both end up in `run_worker`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from crawlq.connection import connect
from crawlq.errors import ConfigError, RedisUnavailable
from crawlq.heartbeats import live_workers
from crawlq.settings import Settings
from workers.main import CrawlWorker

__all__ = ["check_health", "main", "run_worker"]


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _probe(settings: Settings) -> None:
    pool = await connect(settings)
    await pool.aclose()


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or, with `burst`, until the queue is empty); returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("crawlq").setLevel(logging.INFO)
    _install_uvloop()
    try:
        asyncio.run(_probe(settings))
    except RedisUnavailable as exc:
        print(f"crawlq worker: {exc}", file=sys.stderr)
        return 1
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = CrawlWorker(settings, burst=burst)
    try:
        worker.run()
    except (OSError, ConnectionError) as exc:
        print(f"crawlq worker: lost Redis for longer than {settings.redis_retry_window_s:g} s ({exc})", file=sys.stderr)
        return 1
    except Exception as exc:
        if "Connection" in type(exc).__name__ or "Timeout" in type(exc).__name__:
            print(f"crawlq worker: lost Redis ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
        raise
    return 0


async def _healthy(settings: Settings) -> bool:
    pool = await connect(settings)
    try:
        host = socket.gethostname()
        return any(beat.get("host") == host for beat in await live_workers(pool))
    finally:
        await pool.aclose()


def check_health(settings: Settings) -> int:
    """0 if a worker on this host has a live heartbeat, else 1 (for container health checks)."""
    try:
        return 0 if asyncio.run(_healthy(settings)) else 1
    except RedisUnavailable as exc:
        print(f"crawlq worker --check: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run a crawlq worker.")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--check", action="store_true", help="health check: exit 0 if a worker here is alive")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        if args.concurrency is not None:
            settings = settings.replace(concurrency=args.concurrency)
    except ConfigError as exc:
        print(f"python -m workers: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(check_health(settings) if args.check else run_worker(settings, burst=args.burst))
