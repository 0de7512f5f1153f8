"""Test factories: an `Entry` and a `UrlResult` from keyword arguments with defaults, so a test names only
the fields it is about."""

from __future__ import annotations

from crawlq.jobs import Entry
from crawlq.models import Content, ErrorClass, UrlResult, now_ms
from crawlq.urls import canonical, url_id

__all__ = ["entry", "result"]


def entry(url: str = "http://a.test/", *, attempts: int = 0, depth: int = 0) -> Entry:
    """The entry of `url` as a submit writes it: canonical URL, its id."""
    spelled = canonical(url)
    return Entry(url_id(spelled), spelled, attempts=attempts, depth=depth)


def result(
    url: str = "http://a.test/",
    *,
    status: int | None = 200,
    ok: bool | None = None,
    latency_ms: float | None = 10.0,
    attempts: int = 1,
    size_bytes: int = 100,
    error: ErrorClass | None = None,
    message: str | None = None,
    final_url: str | None = None,
    fetched_at: int | None = None,
    content: Content | None = None,
) -> UrlResult:
    """A result for `url`; `ok` defaults to a status below 400 without an error."""
    return UrlResult(
        url,
        ok if ok is not None else (status is not None and status < 400 and error is None),
        status,
        latency_ms,
        attempts,
        size_bytes,
        error,
        message,
        final_url if final_url is not None else url,
        now_ms() if fetched_at is None else fetched_at,
        content,
    )
