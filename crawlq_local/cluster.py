"""A whole crawlq on one machine: an embedded Redis-protocol server (unless one is given) and N worker
processes (`python -m crawlq_cli worker`), for `crawlq crawl`, `crawlq demo`, the tests and the benchmarks.
Everything it started is stopped on exit, Ctrl-C included."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from types import TracebackType

from crawlq.errors import CrawlqError
from crawlq.settings import Settings
from crawlq_local.processes import WORKER_COMMAND, spawn, stop
from crawlq_local.server import EmbeddedServer
from producer.client import Client
from producer.submit import printable

__all__ = ["LocalCluster", "WorkersExited"]

TAIL_BYTES = 4096  #: how much of a worker's log end `log_tail` reads


class WorkersExited(CrawlqError):
    """Every worker of a local cluster exited before its batch was complete."""


class LocalCluster:
    """:param redis_url: use this server instead of starting an embedded one."""

    def __init__(
        self, settings: Settings, *, workers: int = 1, redis_url: str | None = None, log_dir: str | None = None
    ) -> None:
        self.settings = settings
        self.worker_count = workers
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.server: EmbeddedServer | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("LocalCluster is not started")
        return self._client

    async def start(self) -> None:
        if self.redis_url is None:
            self.server = EmbeddedServer()
            await asyncio.to_thread(self.server.start)
            self.settings = self.settings.model_copy(update={"redis_url": self.server.url})
        else:
            self.settings = self.settings.model_copy(update={"redis_url": self.redis_url})
        self._client = await Client.connect(self.settings)
        for _ in range(self.worker_count):
            self.add_worker()

    def add_worker(self) -> subprocess.Popen[bytes]:
        log = Path(self.log_dir) / f"worker-{len(self.processes)}.log" if self.log_dir else None
        process = spawn(WORKER_COMMAND, self.settings.child_env(), log)
        self.processes.append(process)
        return process

    def exited(self) -> list[tuple[int, int]]:
        """(index, exit code) of every worker process that has exited."""
        return [
            (index, process.returncode) for index, process in enumerate(self.processes) if process.poll() is not None
        ]

    def log_tail(self, index: int) -> str:
        """The last line of worker `index`'s log, escaped for a terminal ("" without a log)."""
        if not self.log_dir:
            return ""
        try:
            with open(Path(self.log_dir) / f"worker-{index}.log", "rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - TAIL_BYTES))
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return printable(lines[-1]) if lines else ""

    async def stop(self) -> None:
        await asyncio.to_thread(stop, self.processes, self.settings.shutdown_grace_s + 5)
        self.processes.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
        if self.server is not None:
            await asyncio.to_thread(self.server.cleanup)
            self.server = None

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())
