"""Every tunable of crawlq, read from `CRAWLQ_*` environment variables and `.env`.

There is no module-level instance: build `Settings()` where the process starts and pass it down.
Tests build `Settings(redis_url=...)` with keyword overrides.

An invalid value raises `crawlq.errors.ConfigError` with one sentence that names the variable and says
what is wrong ("CRAWLQ_CONCURRENCY=0: must be at least 1"); `Settings.replace` validates the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from crawlq.addresses import parse_networks
from crawlq.errors import ConfigError

__all__ = ["HostRule", "Settings", "default_user_agent", "describe_errors"]


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

    model_config = SettingsConfigDict(env_prefix="CRAWLQ_", env_file=".env", extra="ignore", allow_inf_nan=False)

    # --- Redis and the queue
    redis_url: str = "redis://127.0.0.1:6379/0"  #: where the queue, results and stats live
    queue_name: str = Field(
        default="crawlq:queue", min_length=1
    )  #: the arq queue (a sorted set) shared by producers and workers
    redis_connect_timeout_s: float = Field(default=5.0, gt=0)
    redis_retry_window_s: float = Field(
        default=30.0, ge=0
    )  #: how long workers, wait, status --watch ride out an outage
    allow_eviction: bool = False  #: go on (with a warning) when Redis's maxmemory-policy is not noeviction

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
    user_agent: str = Field(default_factory=default_user_agent, min_length=1)
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

    # --- Worker metrics
    metrics_port: int = Field(default=0, ge=0, le=65535)  #: serve this worker's own /metrics on it (0: off)
    metrics_host: str = "0.0.0.0"  #: the address the worker's /metrics listens on

    # --- Address policy (SSRF guard)
    allow_private: bool = False  #: allow loopback/private/link-local/... targets, never cloud metadata
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)  #: comma list of CIDRs allowed

    def __init__(self, **values: Any) -> None:
        """Read the environment and `.env`, then `values`; raise `ConfigError` (one sentence) if invalid."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, given=values)) from None
        except SettingsError as exc:
            raise ConfigError(f"cannot read the settings: {exc}") from None

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with `changes` applied (unlike `model_copy`, which checks nothing)."""
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, given=changes)) from None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        problem = _redis_url_problem(value)
        if problem:
            raise ValueError(f"{problem}; expected redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix://PATH")
        return value

    @field_validator("host_rules", mode="before")
    @classmethod
    def _parse_host_rules(cls, value: object) -> object:
        if isinstance(value, str):
            import orjson

            try:
                return orjson.loads(value) if value.strip() else []
            except orjson.JSONDecodeError:
                raise ValueError(
                    'not valid JSON; expected a list like [{"pattern": "*.example.com", "delay_s": 2}]'
                ) from None
        return value

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        return parse_networks(value)

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


def _redis_url_problem(url: str) -> str:
    """What is wrong with a Redis URL as arq reads it, or "" if nothing."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a Redis URL: {str(exc)[:1].lower()}{str(exc)[1:]}"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "not a Redis URL: it must start with redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        return "" if parts.path else "no socket path after unix://"
    database = (parse_qs(parts.query).get("db") or [parts.path.lstrip("/") or "0"])[0]
    return "" if database.isdigit() else f"the database {database!r} is not a number"


_REASONS = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be a boolean (1/0, true/false, yes/no, on/off)",
    "string_too_short": "must not be empty",
    "missing": "is required",
    "extra_forbidden": "is not a known key (known: pattern, concurrency, delay_s)",
    "list_type": "must be a JSON list",
    "model_type": 'must be a JSON object like {{"pattern": "*.example.com", "delay_s": 2}}',
}


def _without_password(text: str) -> str:
    """`text` with the password of a URL's userinfo (scheme://user:PASSWORD@host) replaced by ***."""
    userinfo, at, rest = text.rpartition("@")
    scheme, sep, user = userinfo.partition("://")
    if not at or not sep or ":" not in user:
        return text
    return f"{scheme}://{user.partition(':')[0]}:***@{rest}"


def _shown(value: object, limit: int = 80) -> str:
    """A value as it can be printed safely: a password hidden, non-printable characters escaped, long values cut."""
    text = _without_password(value) if isinstance(value, str) else repr(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def _reason(error: ErrorDetails) -> str:
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    template = _REASONS.get(error["type"])
    return template.format(**error.get("ctx", {})) if template else error["msg"][:1].lower() + error["msg"][1:]


def _one(error: ErrorDetails, given: set[str]) -> str:
    name, *inner = error["loc"]
    label = str(name) if name in given else f"CRAWLQ_{str(name).upper()}"
    if not inner:
        return f"{label}={_shown(error['input'])}: {_reason(error)}"
    rule = f"rule {int(inner[0]) + 1}" if isinstance(inner[0], int) else str(inner[0])
    if len(inner) == 1:
        return f"{label}: {rule}: {_reason(error)}"
    key = ".".join(str(part) for part in inner[1:])
    value = "" if error["type"] in ("missing", "extra_forbidden") else f"={_shown(error['input'])}"
    return f"{label}: {rule}: {key}{value}: {_reason(error)}"


def describe_errors(exc: ValidationError, given: Iterable[str] = ()) -> str:
    """One line for a settings ValidationError: each bad variable (or keyword in `given`) and its problem."""
    names = set(given)
    return "; ".join(_one(error, names) for error in exc.errors())
