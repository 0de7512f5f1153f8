"""What every part gets (the profile, the target site, a work directory) and what it returns."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import TargetProcess, run_json
from bench.profiles import Profile
from bench.workload import write_lines

__all__ = ["Bench", "PartRound"]


@dataclass(slots=True)
class PartRound:
    """One part's output for one round.

    :param figures: flat name -> number; these are aggregated over rounds (median, min, max).
    :param rows: the table rows of this round (one dict per mode).
    :param skipped: mode -> why it did not run.
    """

    figures: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"figures": self.figures, "rows": self.rows, "skipped": self.skipped, "detail": self.detail}


@dataclass(slots=True)
class Bench:
    profile: Profile
    target: TargetProcess
    workdir: Path
    round: int = 0
    scrapy: bool = False  #: Scrapy is importable (installed or installed on demand)
    profile_worker: bool = False  #: attach py-spy to a crawlq worker during one extra throughput run
    out_dir: Path = field(default_factory=Path)
    done: dict[str, PartRound] = field(default_factory=dict)  #: parts already run in this round

    def path(self, name: str) -> Path:
        return self.workdir / f"r{self.round}-{name}"

    def log_dir(self, name: str) -> Path:
        return self.workdir / "logs" / f"r{self.round}-{name}"

    def url_file(self, name: str, urls: list[str]) -> Path:
        return write_lines(self.path(f"{name}.txt"), urls)

    async def client(self, mode: str, urls: list[str], name: str, *extra: str) -> dict[str, Any]:
        """Run `python -m bench.clients MODE` on `urls` in a fresh interpreter (see bench/clients.py)."""
        command = [sys.executable, "-m", "bench.clients", mode, "--urls", str(self.url_file(name, urls)), *extra]
        return await run_json(command, timeout_s=900)
