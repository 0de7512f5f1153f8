"""The JSON the API takes and gives (and so its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crawlq.models import BatchStats
from crawlq.options import BatchOptions
from crawlq_api.settings import MAX_WAIT_S

__all__ = [
    "BatchAction",
    "BatchDetail",
    "BatchPage",
    "HostModel",
    "HostsModel",
    "InvalidLineModel",
    "LatencyBucket",
    "QueueDepthModel",
    "ResultRecord",
    "SubmitRequest",
    "SubmitResponse",
    "TotalsModel",
    "WorkersModel",
]

BATCH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class SubmitRequest(BaseModel):
    """Either `urls` (a list) or `lines` (text, one URL a line; blank lines and # comments skipped)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] | None = Field(default=None, max_length=1_000_000)
    lines: str | None = None
    batch: str | None = Field(default=None, pattern=BATCH_PATTERN, description="batch id (default: a new one)")
    wait_s: float = Field(default=0.0, ge=0, le=MAX_WAIT_S, description="wait up to this long for the results")
    priority: int = Field(
        default=0, ge=-1_000_000, le=1_000_000, description="workers claim higher-priority batches first"
    )
    strict: bool = Field(default=False, description="refuse the whole batch (422) if any line is invalid")
    options: BatchOptions | None = Field(
        default=None,
        description="the batch's fetch options: headers, cookies, user_agent, proxy, recrawl_of, follow "
        '({"max_depth", "scope", "max_pages"}: link following) (secrets are never echoed, not even in a 422); '
        "`address_policy` is always replaced by the API's own (CRAWLQ_API_ALLOWED_NETWORKS)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SubmitRequest:
        if (self.urls is None) == (self.lines is None):
            raise ValueError("give exactly one of `urls` (a list of URLs) or `lines` (text, one URL a line)")
        return self

    def input_lines(self) -> list[str]:
        return list(self.urls) if self.urls is not None else (self.lines or "").splitlines()


class BatchAction(BaseModel):
    """What a cancel, pause, resume or delete did."""

    batch: str
    changed: bool = Field(description="false: nothing to do (the message says why)")
    message: str
    cancelled: int = Field(default=0, description="URLs recorded as cancelled")


class InvalidLineModel(BaseModel):
    line: int
    text: str
    reason: str


class ResultRecord(BaseModel):
    url: str
    ok: bool
    status: int | None
    latency_ms: float | None
    attempts: int
    bytes: int
    error: str | None
    message: str | None
    final_url: str
    fetched_at: str | None
    unchanged: bool = False
    content_type: str | None = None
    encoding: str | None = None
    title: str | None = None
    snippet: str | None = None
    content_sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_length: int | None = None
    content_language: str | None = None
    content_encoding: str | None = None
    body_ref: str | None = None


class SubmitResponse(BaseModel):
    batch: str
    queued: int
    duplicates: int
    invalid: int
    jobs: int
    invalid_lines: list[InvalidLineModel]
    waited: bool = Field(description="a wait_s was given")
    partial: bool = Field(description="the batch was not complete when the wait ended")
    pending: int | None = Field(default=None, description="URLs still without a result when the wait ended")
    stats: BatchStats | None = None
    results: list[ResultRecord] = Field(default_factory=list)
    results_truncated: bool = False
    partial_failure: bool = Field(default=False, description="stats or results could not be read in time")


class BatchDetail(BaseModel):
    batch: str
    stats: BatchStats | None
    progress: float | None = Field(description="done / total, 0..1")
    open_jobs: int | None = Field(description="jobs of the batch not yet finished")
    bound_by: Literal["per_host"] | None = Field(
        default=None,
        description='"per_host": the per-host limits, not the workers, are what slow the batch now (every host '
        "it waits for is at its limit or cooling down while live workers have free fetch slots); null otherwise",
    )
    note: str | None = Field(default=None, description="when `bound_by` is set: why, and the setting that changes it")
    partial_failure: bool
    failed_sources: list[str]


class BatchPage(BaseModel):
    total: int | None
    offset: int
    limit: int
    batches: list[BatchStats]
    unknown: list[str] = Field(description="listed batches whose stats expired or could not be read in time")
    partial_failure: bool


class QueueDepthModel(BaseModel):
    urls: dict[str, int] | None = Field(description="URLs by state: ready, deferred, in_flight")
    jobs: dict[str, int] | None = Field(description="jobs by state: ready, deferred, in_flight")
    workers_alive: int | None
    fetches_in_flight: int | None
    partial_failure: bool
    failed_sources: list[str]


class WorkersModel(BaseModel):
    workers: list[dict[str, Any]]
    count: int


class HostModel(BaseModel):
    host: str
    in_flight: int = Field(description="requests holding a lease on the host now")
    limit: int = Field(description="requests in flight allowed (CRAWLQ_PER_HOST_CONCURRENCY or a host rule)")
    delay_s: float = Field(description="minimum gap between request starts")
    cooldown_s: float = Field(description="cooldown left after a 429/503, 0 if none")
    penalty_ms: int = Field(description="the cooldown the next throttle starts from")


class HostsModel(BaseModel):
    hosts: list[HostModel] = Field(description="busiest first: in flight, then cooldown left")
    total: int = Field(description="hosts with politeness state")
    in_cooldown: int
    at_limit: int = Field(description="hosts whose in-flight requests reached their limit")


class HostRuleBody(BaseModel):
    """A run-time host rule's values (PUT /hosts/rules/{pattern}); give one or both."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(default=None, ge=1, le=10_000, description="requests in flight on a matching host")
    delay_s: float | None = Field(default=None, ge=0, le=86_400, description="seconds between request starts")


class HostRuleRequest(HostRuleBody):
    @model_validator(mode="after")
    def _some_value(self) -> HostRuleRequest:
        if self.concurrency is None and self.delay_s is None:
            raise ValueError("give concurrency, delay_s or both")
        return self


class HostRuleModel(HostRuleBody):
    pattern: str = Field(description="fnmatch pattern on the host (`*.example.com`)")


class HostRulesModel(BaseModel):
    rules: list[HostRuleModel] = Field(description="run-time host rules, applied before CRAWLQ_HOST_RULES")


class LatencyBucket(BaseModel):
    le_ms: float | None = Field(description="upper bound in ms; null for the last, unbounded bucket")
    count: int = Field(description="final attempts in this bucket (not cumulative)")


class TotalsModel(BaseModel):
    done: int
    succeeded: int
    failed: int
    attempts: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    latency: list[LatencyBucket] = Field(description="histogram of the final attempts' latency, all batches")
