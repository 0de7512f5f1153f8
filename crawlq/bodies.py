"""Body storage (`CRAWLQ_STORE_BODIES`): where full page bodies go, gzip-compressed, named by their SHA-256.

- `none` (the default): bodies are not kept;
- `dir:/path` (or a bare path): one file per body, `/path/ab/<sha256>.gz`, written to a temporary file
  and renamed into place (atomic), in a thread so the event loop never waits on the disk;
- `redis`: a key per body (`keys.body`), compressed, with its own TTL (`store_body_ttl_s`) and a size cap
  (`store_body_max_bytes`, compressed).

The same body is written once (its name is its hash). A write that fails raises `StorageFailed` with one
sentence; the worker records a `storage` failure for that URL and logs the cause at most once a minute.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from crawlq import keys
from crawlq.errors import ConfigError
from crawlq.settings import Settings

__all__ = ["BodyStore", "DirectoryStore", "RedisBodyStore", "StorageFailed", "open_body_store", "read_body"]

logger = logging.getLogger("crawlq.bodies")
LOG_EVERY_S = 60.0  #: a storage failure's cause is logged at most this often (not once per URL)


class StorageFailed(Exception):
    """A body could not be stored; the message is one sentence."""


class BodyStore:
    """Where a worker puts bodies; `put` returns the result's `body_ref`."""

    def __init__(self) -> None:
        self._logged_at: dict[str, float] = {}

    async def put(self, body: bytes, sha256: str) -> str:
        raise NotImplementedError

    def failed(self, message: str) -> StorageFailed:
        """Log `message` unless the same kind of failure was logged within `LOG_EVERY_S`."""
        kind = message.split(":", 1)[0]
        now = time.monotonic()
        if now - self._logged_at.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[kind] = now
            logger.error("body storage failed (the URLs get a `storage` failure; logged once a minute): %s", message)
        return StorageFailed(message)


class DirectoryStore(BodyStore):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.gz"

    def _write(self, body: bytes, sha256: str) -> None:
        target = self.path_of(sha256)
        if target.exists():
            return
        target.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(gzip.compress(body, compresslevel=5))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def put(self, body: bytes, sha256: str) -> str:
        try:
            await asyncio.to_thread(self._write, body, sha256)
        except OSError as exc:
            raise self.failed(f"{exc.strerror or type(exc).__name__}: cannot write under {self.root}") from exc
        return f"dir:{self.path_of(sha256)}"


class RedisBodyStore(BodyStore):
    def __init__(self, redis: Redis, ttl_s: int, max_bytes: int) -> None:
        super().__init__()
        self.redis, self.ttl_s, self.max_bytes = redis, ttl_s, max_bytes

    async def put(self, body: bytes, sha256: str) -> str:
        packed = await asyncio.to_thread(gzip.compress, body, 5) if len(body) > 65_536 else gzip.compress(body, 5)
        if len(packed) > self.max_bytes:
            raise self.failed(f"too large: {len(packed)} compressed bytes, above store_body_max_bytes {self.max_bytes}")
        try:
            await self.redis.set(keys.body(sha256), packed, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            raise self.failed(f"Redis refused the body: {type(exc).__name__}: {exc}"[:200]) from exc
        return f"redis:{keys.body(sha256)}"


def open_body_store(settings: Settings, redis: Redis) -> BodyStore | None:
    """The store `settings.store_bodies` names, or None for `none`."""
    spec = settings.store_bodies.strip()
    if spec in ("", "none"):
        return None
    if spec == "redis":
        return RedisBodyStore(redis, settings.store_body_ttl_s, settings.store_body_max_bytes)
    path = spec.removeprefix("dir:")
    if not path.startswith("/"):
        raise ConfigError(f"CRAWLQ_STORE_BODIES is none, redis, or an absolute directory path, not {spec!r}")
    return DirectoryStore(Path(path))


async def read_body(ref: str, redis: Redis) -> bytes | None:
    """The (decompressed) body a `body_ref` names, or None if it is gone."""
    if ref.startswith("redis:"):
        packed = await redis.get(ref.removeprefix("redis:"))
    else:
        try:
            packed = await asyncio.to_thread(Path(ref.removeprefix("dir:")).read_bytes)
        except OSError:
            return None
    return gzip.decompress(packed) if packed is not None else None
