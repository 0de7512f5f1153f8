"""The FastAPI application: routes over the producer's Client; every multi-source read has a deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError, ResponseError

from crawlq import __version__, keys
from crawlq.connection import describe, result_of
from crawlq.control import BatchRunning, ControlOutcome
from crawlq.errors import ConfigError, RedisOutOfMemory, RedisUnavailable, UnknownBatch
from crawlq.heartbeats import Heartbeat, live_workers
from crawlq.hostrules import read_rules, set_rule, unset_rule
from crawlq.memory import is_out_of_memory
from crawlq.models import BatchStats
from crawlq.options import BatchOptions
from crawlq.outage import Outage
from crawlq.settings import HostRule, Settings
from crawlq.stats import Family
from crawlq.store import BatchCancelled, OptionsConflict
from crawlq_api.dashboard import router as dashboard_router
from crawlq_api.guard import SubmitGuard
from crawlq_api.metrics import cumulative_latency, read_totals, render_metrics
from crawlq_api.models import (
    BatchAction,
    BatchDetail,
    BatchPage,
    HostModel,
    HostRuleModel,
    HostRuleRequest,
    HostRulesModel,
    HostsModel,
    InvalidLineModel,
    LatencyBucket,
    QueueDepthModel,
    ResultRecord,
    SubmitRequest,
    SubmitResponse,
    TotalsModel,
    WorkersModel,
)
from crawlq_api.reads import gather_within
from crawlq_api.security import BodyLimit, TokenCheck
from crawlq_api.settings import ApiSettings
from crawlq_api.stream import MEDIA_TYPES, follow_results, format_rows, stored_results
from producer.client import Client
from producer.cluster import queue_urls, read_hosts
from producer.submit import InvalidLine, parse_lines

__all__ = ["create_app"]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token"},
    413: {"description": "request body above CRAWLQ_API_MAX_BODY_BYTES"},
    503: {"description": "Redis cannot be reached"},
}
BatchId = Annotated[str, "batch id"]
API_RETRY_WINDOW_S = 2.0  #: how long the API's commands retry a dropped connection or an outage
logger = logging.getLogger("crawlq.api")
PLACEHOLDER_TOKEN = "REPLACE-ME"  #: the start of the placeholder tokens shipped in deploy/k8s/api-secret.yaml


class Backend:
    """One Client per app, connected on first use (so the API starts, and says so, while Redis is down).

    Its commands retry a dropped connection, or an outage, for up to `API_RETRY_WINDOW_S` from the first
    failure (no longer than CRAWLQ_REDIS_RETRY_WINDOW_S); past that, requests get their 503 at once until
    Redis answers again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        window_s = min(API_RETRY_WINDOW_S, settings.redis_retry_window_s)
        self._outage = Outage(describe(settings.redis_url), window_s, logger.warning)

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await Client.connect(self.settings, outage=self._outage)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


@dataclass(slots=True)
class Context:
    backend: Backend
    api: ApiSettings
    guard: SubmitGuard


def context(request: Request) -> Context:
    found: Context = request.app.state.crawlq
    return found


Ctx = Annotated[Context, Depends(context)]
router = APIRouter()


# ---------------------------------------------------------------- health
@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process answers (liveness)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses={503: {"description": "Redis is not reachable"}})
async def readyz(ctx: Ctx) -> JSONResponse:
    """Redis answers a PING within the read deadline (readiness)."""
    try:
        async with asyncio.timeout(ctx.api.read_deadline_s):
            client = await ctx.backend.client()
            await client.redis.ping()
    except (TimeoutError, RedisUnavailable, RedisError, OSError) as exc:
        reason = str(exc) or f"Redis did not answer within {ctx.api.read_deadline_s:g} s"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)
    return JSONResponse({"ready": True})


# ---------------------------------------------------------------- submit
def _strict_refusal(invalid: list[InvalidLine]) -> HTTPException:
    detail = [
        {"loc": ["body", "lines", bad.line], "msg": f"line {bad.line}: {bad.reason}", "type": "invalid_url"}
        for bad in invalid
    ]
    return HTTPException(422, detail)


async def _collect(client: Client, batch: str, limit: int) -> tuple[list[ResultRecord], bool]:
    records: list[ResultRecord] = []
    async for result in client.results(batch):
        if len(records) >= limit:
            return records, True
        records.append(ResultRecord(**result.to_dict()))
    return records, False


async def _wait_for(client: Client, response: SubmitResponse, wait_s: float, api: ApiSettings) -> None:
    """Wait up to `wait_s` for the batch, then read its stats and results under the read deadline."""
    try:
        async with asyncio.timeout(wait_s):
            await client.wait(response.batch, poll_s=0.25)
    except (TimeoutError, UnknownBatch, RedisError, OSError):
        pass
    gathered = await gather_within(
        api.read_deadline_s,
        {"stats": client.stats(response.batch), "results": _collect(client, response.batch, api.wait_results_max)},
    )
    stats: BatchStats | None = gathered.values.get("stats")
    response.stats = stats
    response.partial = stats is None or not stats.complete
    response.pending = stats.pending if stats is not None else None
    if "results" in gathered.values:
        response.results, response.results_truncated = gathered.values["results"]
    response.partial_failure = gathered.partial_failure


@router.post("/batches", tags=["batches"], response_model=SubmitResponse)
async def submit_batch(body: SubmitRequest, ctx: Ctx) -> SubmitResponse:
    """Validate, de-duplicate and enqueue URLs, as `crawlq submit` does; URLs whose host is or resolves to a
    non-public address are refused unless in CRAWLQ_API_ALLOWED_NETWORKS. With `wait_s`, wait up to that
    long and return the results complete by then (`partial` and `pending` say what is missing)."""
    client = await ctx.backend.client()
    if body.options is not None and body.options.proxy is not None:
        reason = await ctx.guard.proxy_reason(body.options.proxy)
        if reason is not None:
            detail = [{"loc": ["body", "options", "proxy"], "msg": f"proxy: {reason}", "type": "blocked_address"}]
            raise HTTPException(422, detail)
    lines, blocked = await ctx.guard.screen(body.input_lines())
    if body.strict:
        invalid = sorted(parse_lines(lines).invalid + blocked, key=lambda bad: bad.line)
        if invalid:
            raise _strict_refusal(invalid)
    options = (body.options or BatchOptions()).model_copy(update={"address_policy": ctx.guard.rules})
    report = await client.submit(lines, body.batch, options=options, priority=body.priority)
    invalid_lines = sorted(report.invalid_lines + blocked, key=lambda bad: bad.line)
    response = SubmitResponse(
        batch=report.batch,
        queued=report.queued,
        duplicates=report.duplicates,
        invalid=len(invalid_lines),
        jobs=report.jobs,
        invalid_lines=[InvalidLineModel(line=bad.line, text=bad.text, reason=bad.reason) for bad in invalid_lines],
        waited=body.wait_s > 0,
        partial=False,
    )
    if body.wait_s > 0:
        await _wait_for(client, response, min(body.wait_s, ctx.api.max_wait_s), ctx.api)
    return response


# ---------------------------------------------------------------- batches
@router.get("/batches", tags=["batches"], response_model=BatchPage)
async def list_batches(
    ctx: Ctx, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> BatchPage:
    """Batches, most recent first, with their stats."""
    client = await ctx.backend.client()
    deadline_s = ctx.api.read_deadline_s
    listed = await gather_within(
        deadline_s,
        {
            "total": result_of(client.redis.zcard(keys.BATCHES)),
            "names": result_of(client.redis.zrevrange(keys.BATCHES, offset, offset + limit - 1)),
        },
    )
    names = [raw.decode() for raw in listed.values.get("names", [])]
    stats = await gather_within(deadline_s, {name: client.stats(name) for name in names})
    return BatchPage(
        total=listed.values.get("total"),
        offset=offset,
        limit=limit,
        batches=[stats.values[name] for name in names if name in stats.values],
        unknown=[name for name in names if name not in stats.values],
        partial_failure=listed.partial_failure
        or any(not isinstance(stats.errors.get(name), UnknownBatch) for name in stats.failed),
    )


@router.get("/batches/{batch}", tags=["batches"], response_model=BatchDetail, responses={404: {}})
async def batch_detail(batch: BatchId, ctx: Ctx) -> BatchDetail:
    """One batch's progress and statistics."""
    client = await ctx.backend.client()
    gathered = await gather_within(
        ctx.api.read_deadline_s,
        {
            "stats": client.stats(batch),
            "open_jobs": result_of(client.redis.hlen(keys.batch_jobs(batch))),
            "note": client.bound_note(batch),
        },
    )
    error = gathered.errors.get("stats")
    if isinstance(error, UnknownBatch):
        raise HTTPException(404, str(error))
    stats: BatchStats | None = gathered.values.get("stats")
    progress = None if stats is None else (stats.done / stats.total if stats.total else 1.0)
    return BatchDetail(
        batch=batch,
        stats=stats,
        progress=progress,
        open_jobs=gathered.values.get("open_jobs"),
        bound_by="per_host" if gathered.values.get("note") else None,
        note=gathered.values.get("note"),
        partial_failure=gathered.partial_failure,
        failed_sources=gathered.failed,
    )


def _action(outcome: ControlOutcome) -> BatchAction:
    return BatchAction(
        batch=outcome.batch, changed=outcome.changed, message=outcome.message, cancelled=outcome.cancelled
    )


@router.post("/batches/{batch}/cancel", tags=["batches"], response_model=BatchAction, responses={404: {}})
async def cancel_batch(batch: BatchId, ctx: Ctx) -> BatchAction:
    """Record every URL not yet done as `cancelled` (exactly once) and complete the batch; a complete batch
    is left as it is (`changed: false`)."""
    return _action(await (await ctx.backend.client()).cancel(batch))


@router.post("/batches/{batch}/pause", tags=["batches"], response_model=BatchAction, responses={404: {}})
async def pause_batch(batch: BatchId, ctx: Ctx) -> BatchAction:
    """Start no new fetch for the batch (within a second) until it is resumed; fetches in flight finish."""
    return _action(await (await ctx.backend.client()).pause(batch))


@router.post("/batches/{batch}/resume", tags=["batches"], response_model=BatchAction, responses={404: {}})
async def resume_batch(batch: BatchId, ctx: Ctx) -> BatchAction:
    """Resume a paused batch."""
    return _action(await (await ctx.backend.client()).resume(batch))


@router.delete("/batches/{batch}", tags=["batches"], response_model=BatchAction, responses={404: {}, 409: {}})
async def delete_batch(batch: BatchId, ctx: Ctx, force: bool = False) -> BatchAction:
    """Delete the batch's keys. A batch not complete is refused (409) unless `force=true`, which cancels it
    first."""
    return _action(await (await ctx.backend.client()).delete(batch, force=force))


@router.get(
    "/batches/{batch}/results",
    tags=["batches"],
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "one record per URL"},
        404: {},
    },
)
async def batch_results(
    batch: BatchId,
    ctx: Ctx,
    format: Literal["jsonl", "csv"] = "jsonl",
    follow: bool = False,
) -> StreamingResponse:
    """Stream the batch's results; with `follow=true`, keep streaming them as they are committed until the
    batch completes."""
    client = await ctx.backend.client()
    try:
        async with asyncio.timeout(ctx.api.read_deadline_s):
            await client.stats(batch)
    except UnknownBatch as exc:
        raise HTTPException(404, str(exc)) from exc
    except TimeoutError as exc:
        raise HTTPException(503, f"Redis did not answer within {ctx.api.read_deadline_s:g} s") from exc
    source = (
        follow_results(client.store, batch, ctx.api.follow_poll_s, ctx.api.follow_max_s)
        if follow
        else stored_results(client.store, batch)
    )
    return StreamingResponse(format_rows(source, format), media_type=MEDIA_TYPES[format])


# ---------------------------------------------------------------- cluster
@router.get("/queue", tags=["cluster"], response_model=QueueDepthModel)
async def queue(ctx: Ctx) -> QueueDepthModel:
    """Queue depth in URLs and in jobs, by state, and the workers' fetches in flight."""
    client = await ctx.backend.client()
    gathered = await gather_within(
        ctx.api.read_deadline_s,
        {"queue": queue_urls(client.redis, ctx.backend.settings.queue_name), "workers": live_workers(client.redis)},
    )
    depth = gathered.values.get("queue")
    urls, jobs = (depth.urls(), depth.jobs()) if depth is not None else (None, None)
    beats: list[Heartbeat] | None = gathered.values.get("workers")
    return QueueDepthModel(
        urls=urls,
        jobs=jobs,
        workers_alive=None if beats is None else len(beats),
        fetches_in_flight=None if beats is None else sum(beat.in_flight for beat in beats),
        partial_failure=gathered.partial_failure,
        failed_sources=gathered.failed,
    )


@router.get("/workers", tags=["cluster"], response_model=WorkersModel)
async def workers(ctx: Ctx) -> WorkersModel:
    """Live workers, from their heartbeats."""
    client = await ctx.backend.client()
    try:
        async with asyncio.timeout(ctx.api.read_deadline_s):
            beats = await live_workers(client.redis)
    except TimeoutError as exc:
        raise HTTPException(503, f"Redis did not answer within {ctx.api.read_deadline_s:g} s") from exc
    return WorkersModel(workers=[beat.to_record() for beat in beats], count=len(beats))


async def _within(deadline_s: float, source: Any) -> Any:
    try:
        async with asyncio.timeout(deadline_s):
            return await source
    except TimeoutError as exc:
        raise HTTPException(503, f"Redis did not answer within {deadline_s:g} s") from exc


@router.get("/hosts", tags=["cluster"], response_model=HostsModel)
async def hosts(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> HostsModel:
    """Per-host politeness state, busiest first: requests in flight, limit, delay, cooldown left."""
    client = await ctx.backend.client()
    found = await _within(ctx.api.read_deadline_s, read_hosts(client.redis, ctx.backend.settings))
    return HostsModel(
        hosts=[HostModel(**host.as_dict()) for host in found[:limit]],
        total=len(found),
        in_cooldown=sum(1 for host in found if host.cooldown_s > 0),
        at_limit=sum(1 for host in found if host.in_flight >= host.limit),
    )


HostPattern = Annotated[
    str, Path(min_length=1, max_length=253, pattern=r"^[^\x00-\x20\x7f/]+$", description="fnmatch pattern on the host")
]


@router.get("/hosts/rules", tags=["cluster"], response_model=HostRulesModel)
async def host_rules(ctx: Ctx) -> HostRulesModel:
    """The host rules set at run time (`crawlq hosts set`), most specific pattern first."""
    client = await ctx.backend.client()
    rules = await _within(ctx.api.read_deadline_s, read_rules(client.redis))
    return HostRulesModel(rules=[HostRuleModel(**rule.model_dump()) for rule in rules])


@router.put("/hosts/rules/{pattern}", tags=["cluster"], response_model=HostRuleModel)
async def put_host_rule(pattern: HostPattern, body: HostRuleRequest, ctx: Ctx) -> HostRuleModel:
    """Set (or replace) a host rule for the whole cluster: every worker applies it within a second, before
    CRAWLQ_HOST_RULES (first match wins). Give `concurrency`, `delay_s` or both."""
    rule = HostRule(pattern=pattern, concurrency=body.concurrency, delay_s=body.delay_s)
    client = await ctx.backend.client()
    await _within(ctx.api.read_deadline_s, set_rule(client.redis, rule))
    return HostRuleModel(**rule.model_dump())


@router.delete("/hosts/rules/{pattern}", tags=["cluster"], response_model=HostRuleModel, responses={404: {}})
async def delete_host_rule(pattern: HostPattern, ctx: Ctx) -> HostRuleModel:
    """Remove a run-time host rule; matching hosts go back to CRAWLQ_HOST_RULES and the defaults."""
    client = await ctx.backend.client()
    rules = {rule.pattern: rule for rule in await _within(ctx.api.read_deadline_s, read_rules(client.redis))}
    if not await _within(ctx.api.read_deadline_s, unset_rule(client.redis, pattern)):
        raise HTTPException(404, f"no run-time host rule for {pattern}")
    removed = rules.get(pattern, HostRule(pattern=pattern))
    return HostRuleModel(**removed.model_dump())


@router.get("/totals", tags=["cluster"], response_model=TotalsModel)
async def totals(ctx: Ctx) -> TotalsModel:
    """Counters over every batch and the latency histogram of the final attempts."""
    client = await ctx.backend.client()
    raw: dict[str, str] = await _within(ctx.api.read_deadline_s, read_totals(client.redis))
    stats = BatchStats.from_counters("*", raw)
    latency: list[LatencyBucket] = []
    below = 0
    for bound_s, cumulative in cumulative_latency(raw):
        latency.append(LatencyBucket(le_ms=bound_s * 1000, count=cumulative - below))
        below = cumulative
    measured = sum(int(value) for value in Family.LATENCY_BUCKET.counts(raw).values())
    latency.append(LatencyBucket(le_ms=None, count=measured - below))
    return TotalsModel(
        done=stats.done, succeeded=stats.succeeded, failed=stats.failed, attempts=stats.attempts,
        p50_ms=stats.p50_ms, p95_ms=stats.p95_ms, p99_ms=stats.p99_ms, latency=latency,
    )  # fmt: skip


@router.get("/metrics", tags=["cluster"], response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (text exposition format)."""
    client = await ctx.backend.client()
    body = await render_metrics(client.store, ctx.backend.settings.queue_name, ctx.api.read_deadline_s)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


# ---------------------------------------------------------------- the app
async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


def _redis_failed(settings: Settings) -> Any:
    """A Redis error as what it is: out of memory (503), a command Redis refused (500, its reply's first
    line), or the connection lost (503)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        where = describe(settings.redis_url)
        if is_out_of_memory(exc):
            message = f"Redis at {where} is out of memory: writes fail until memory is freed or raised"
            return JSONResponse({"detail": message}, status_code=503)
        if isinstance(exc, ResponseError):
            reply = (str(exc).splitlines() or [""])[0][:200]
            return JSONResponse({"detail": f"Redis at {where} refused a command: {reply}"}, status_code=500)
        message = f"lost Redis at {where} ({type(exc).__name__})"
        return JSONResponse({"detail": message}, status_code=503)

    return handler


async def _unknown_batch(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _options_conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing what was sent for the batch options (it may hold secrets)."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        if "options" in error.get("loc", ()):
            error = {name: value for name, value in error.items() if name not in ("input", "ctx")}
        errors.append(error)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def create_app(settings: Settings, api: ApiSettings) -> FastAPI:
    """The API over the Redis of `settings`. Raises ConfigError without `CRAWLQ_API_TOKEN`."""
    if api.token is None or not api.token.get_secret_value():
        raise ConfigError("set CRAWLQ_API_TOKEN: the API refuses to serve without a bearer token")
    if api.token.get_secret_value().startswith(PLACEHOLDER_TOKEN):
        raise ConfigError("CRAWLQ_API_TOKEN is still the placeholder of deploy/k8s/api-secret.yaml: replace it")
    backend = Backend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await backend.close()

    app = FastAPI(
        title="crawlq",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(TokenCheck(api))],
        responses=ERRORS,
    )
    app.state.crawlq = Context(backend, api, SubmitGuard(api.allowed_networks, api.resolve_timeout_s))
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    app.add_exception_handler(RedisUnavailable, _redis_unavailable)
    app.add_exception_handler(RedisOutOfMemory, _redis_unavailable)
    app.add_exception_handler(RedisError, _redis_failed(settings))
    app.add_exception_handler(UnknownBatch, _unknown_batch)
    app.add_exception_handler(OptionsConflict, _options_conflict)
    app.add_exception_handler(BatchRunning, _options_conflict)
    app.add_exception_handler(BatchCancelled, _options_conflict)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(router)
    app.include_router(dashboard_router)
    return app
