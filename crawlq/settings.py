"""Every tunable of crawlq, read from `CRAWLQ_*` environment variables and `.env`.

There is no module-level instance: build `Settings()` where the process starts and pass it down.
Tests build `Settings(redis_url=...)` with keyword overrides.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["HostRule", "Settings", "default_user_agent"]


def default_user_agent() -> str:
    from crawlq import __version__

    return f"crawlq/{__version__} (+https://github.com/crawlq/crawlq; polite distributed crawler)"


class HostRule(BaseModel):
    """Per-host politeness override; `pattern` is an fnmatch pattern on the host name (`*.example.com`)."""

    model_config = ConfigDict(extra="forbid")

    pattern: str
    concurrency: int | None = Field(default=None, ge=1)
    delay_s: float | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    """crawlq settings. Every field `foo` is read from `CRAWLQ_FOO`."""

    model_config = SettingsConfigDict(env_prefix="CRAWLQ_", env_file=".env", extra="ignore")

    # --- Redis and the queue
    redis_url: str = "redis://127.0.0.1:6379/0"  #: where the queue, results and stats live
    queue_name: str = "crawlq:queue"  #: the arq queue (a sorted set) shared by producers and workers
    redis_connect_timeout_s: float = Field(default=5.0, gt=0)
    redis_retry_window_s: float = Field(default=30.0, ge=0)  #: how long a worker rides out a Redis outage

    # --- Jobs
    chunk_size: int = Field(default=100, ge=1, le=1000)  #: URLs per arq job (smaller for small batches)
    job_expires_s: int = Field(default=86_400, gt=0)  #: a job not picked up within this time fails as `expired`
    max_job_tries: int = Field(default=3, ge=1)  #: pickups of one job (crashes) before its URLs fail as `max_tries`
    lease_s: float = Field(default=15.0, gt=1)  #: a running job's lease; a dead worker's job is re-run after it
    chunk_max_s: float = Field(default=60.0, gt=1)  #: a job stops starting URLs after this and hands back the rest
    shutdown_grace_s: float = Field(default=8.0, gt=0)  #: SIGTERM: finish in-flight fetches within this, hand back
    queue_read_limit: int = Field(default=256, ge=1)  #: queue ids a worker reads per poll (> jobs running)
    poll_delay_s: float = Field(default=0.01, gt=0)  #: queue poll delay while busy
    idle_poll_s: float = Field(default=0.25, gt=0)  #: queue poll delay once idle (bounds pick-up latency)
    reconcile_interval_s: float = Field(default=5.0, gt=0)  #: how often a worker looks for URLs arq gave up on
    heartbeat_interval_s: float = Field(default=5.0, gt=0)  #: per-worker heartbeat key refresh
    result_ttl_s: int = Field(default=7 * 86_400, gt=0)  #: how long a batch's results and stats are kept

    # --- Fetching
    concurrency: int = Field(default=10, ge=1)  #: concurrent fetches per worker process
    user_agent: str = Field(default_factory=default_user_agent)
    fetch_timeout_s: float = Field(default=10.0, gt=0)  #: overall deadline of one attempt (connect, headers, body)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)  #: decompressed body cap; above it: `too_large`
    max_redirects: int = Field(default=5, ge=0)
    extract_content: bool = True  #: record type, encoding, title, snippet, SHA-256 and validators of each page
    snippet_chars: int = Field(default=100, ge=0, le=10_000)  #: characters of visible text kept as `snippet`
    store_bodies: str = "none"  #: `none`, `dir:/path` (or `/path`), or `redis`: where full bodies go (gzip)
    store_body_ttl_s: int = Field(default=7 * 86_400, gt=0)  #: `redis` body storage: each body's lifetime
    store_body_max_bytes: int = Field(default=2 * 1024 * 1024, gt=0)  #: `redis`: cap per compressed body

    # --- Retries
    max_attempts: int = Field(default=3, ge=1)  #: attempts per URL for transient failures
    backoff_base_s: float = Field(default=0.5, ge=0)  #: full-jitter exponential backoff: U(0, base * 2^(n-1))
    backoff_max_s: float = Field(default=30.0, ge=0)
    retry_after_max_s: float = Field(default=120.0, ge=0)  #: cap on a server's Retry-After

    # --- Politeness (cluster-wide, kept in Redis)
    per_host_concurrency: int = Field(default=2, ge=1)  #: requests in flight per host across all workers
    per_host_delay_s: float = Field(default=0.0, ge=0)  #: minimum gap between request starts per host
    host_rules: Annotated[list[HostRule], NoDecode] = Field(default_factory=list)  #: JSON list of overrides
    cooldown_base_s: float = Field(default=1.0, ge=0)  #: first cooldown after a 429/503 without Retry-After
    cooldown_max_s: float = Field(default=60.0, ge=0)  #: cap on a host cooldown (a Retry-After may be longer)
    robots_enabled: bool = True  #: obey robots.txt
    robots_ttl_s: int = Field(default=3600, gt=0)  #: robots.txt cache lifetime in Redis
    robots_max_crawl_delay_s: float = Field(default=30.0, ge=0)  #: cap on a robots.txt Crawl-delay

    # --- Address policy (SSRF guard)
    allow_private: bool = False  #: allow loopback/private/link-local/... targets, never cloud metadata
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)  #: comma list of CIDRs allowed

    @field_validator("host_rules", mode="before")
    @classmethod
    def _parse_host_rules(cls, value: object) -> object:
        if isinstance(value, str):
            import orjson

            return orjson.loads(value) if value.strip() else []
        return value

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for network in value:
                try:
                    ipaddress.ip_network(str(network), strict=False)
                except ValueError as exc:
                    raise ValueError(f"not a network (CIDR) in allowed_networks: {network!r}") from exc
        return value

    def env(self) -> dict[str, str]:
        """These settings as `CRAWLQ_*` environment variables, to hand to a child process."""
        import orjson

        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            key = f"CRAWLQ_{name.upper()}"
            if isinstance(value, list):
                out[key] = orjson.dumps(value).decode() if name == "host_rules" else ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                out[key] = "1" if value else "0"
            else:
                out[key] = str(value)
        return out

    def child_env(self) -> dict[str, str]:
        """The current environment with these settings layered on top."""
        return {**os.environ, **self.env()}
