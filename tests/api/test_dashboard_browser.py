"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): the API in uvicorn, real worker
processes crawling two local sites, the page read back and compared with GET /batches/{id}.

Screenshots are saved under the test's tmp dir and, when CRAWLQ_ARTIFACTS is set, copied there.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from crawlq import keys
from crawlq.settings import Settings
from crawlq_api.app import create_app
from crawlq_api.settings import ApiSettings
from crawlq_local.target import ThreadedTargetSite
from tests.api.conftest import READ_TOKEN, TOKEN, running
from tests.helpers import wait_until, workers

CHROMIUM = Path("/usr/bin/chromium")
PER_HOST = 3

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


def _save(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("CRAWLQ_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def _failed(errors: list[str], request: Any) -> None:
    """A request that failed, except those a reload aborts (polls under way when the page goes)."""
    if request.failure != "net::ERR_ABORTED":
        errors.append(f"request failed: {request.url} ({request.failure})")


@pytest.fixture
def browser_page() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--disable-gpu"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda request: _failed(errors, request))
        page.errors = errors
        try:
            yield page
        finally:
            browser.close()


def _shown(page: Any, batch: str) -> dict[str, str]:
    row = page.locator(f'tr[data-batch="{batch}"]')
    done = row.locator('[data-field="done"]')
    return {
        "state": row.locator('[data-field="state"]').inner_text().strip(),
        "done": done.get_attribute("data-done"),
        "total": done.get_attribute("data-total"),
        "failed": row.locator('[data-field="failed"]').get_attribute("data-failed"),
        "done_text": done.inner_text(),
    }


def test_dashboard_shows_the_crawl_as_the_api_reports_it(
    browser_page: Any, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    page = browser_page
    api_settings = ApiSettings(_env_file=None, token=TOKEN, read_token=READ_TOKEN, allowed_networks=["127.0.0.0/8"])
    crawl_settings = settings.model_copy(update={"per_host_concurrency": PER_HOST})
    worker_env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": str(PER_HOST)}
    with (
        ThreadedTargetSite() as first,
        ThreadedTargetSite() as second,
        running(create_app(crawl_settings, api_settings)) as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api,
    ):
        urls = [
            site.url(f"/delay?ms={(50, 120, 250, 400)[i % 4]}&n={i}") for i in range(36) for site in (first, second)
        ]
        urls += [first.url(f"/status/404?n={i}") for i in range(4)]
        batch = api.post("/batches", json={"urls": urls}).json()["batch"]

        page.goto(f"{base}/?interval_ms=500")
        page.fill("#token", READ_TOKEN)
        page.click("#login button[type=submit]")
        page.wait_for_selector(f'tr[data-batch="{batch}"]')
        assert page.locator("#t-ready").inner_text() == "76"  # no worker yet: every URL is ready

        with workers(worker_env, 2, tmp_path, "--concurrency", "4"):
            page.wait_for_function("() => document.querySelectorAll('#hosts tbody tr').length === 2", timeout=30_000)
            page.wait_for_function("() => document.querySelectorAll('#workers tbody tr').length === 2", timeout=30_000)
            page.wait_for_function(  # a third of the way: the charts have a history worth a look
                "() => Number(document.querySelector('[data-field=done]').dataset.done) >= 25", timeout=60_000
            )
            _save(page, tmp_path, "dashboard-running.png")
            hosts = page.locator("#hosts tbody tr").all_inner_texts()
            assert all(f"/ {PER_HOST}" in text for text in hosts), hosts
            assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["complete"], 90, interval=0.2)
            page.wait_for_selector(f'tr[data-batch="{batch}"] .state.complete', timeout=15_000)

        detail = api.get(f"/batches/{batch}").json()["stats"]
        shown = _shown(page, batch)
        assert shown["state"] == detail["state"] == "complete"
        assert (shown["done"], shown["total"], shown["failed"]) == (
            str(detail["done"]),
            str(detail["total"]),
            str(detail["failed"]),
        )
        assert detail["total"] == 76 and detail["failed"] == 4
        assert shown["done_text"] == "76 / 76"
        page.wait_for_function("() => document.getElementById('t-failed').textContent === '4'", timeout=10_000)
        histogram_total = sum(
            int(text.replace(",", "")) for text in page.locator("#histogram > span:not(.le)").all_inner_texts()
        )
        assert histogram_total == api.get("/totals").json()["done"] == 76

        for name in ("pause", "cancel"):  # a complete batch: shown, disabled
            button = page.locator(f'tr[data-batch="{batch}"] button[data-action="{name}"]')
            assert button.is_disabled()
        _save(page, tmp_path, "dashboard-complete.png")

        page.reload()  # the token is kept for the tab (sessionStorage): no second login
        page.wait_for_selector(f'tr[data-batch="{batch}"]')
        assert page.locator("#login").is_hidden()
        assert page.errors == [], page.errors


def _state_shown(page: Any, batch: str, text: str) -> None:
    page.wait_for_function(
        "([batch, text]) => { const el = document.querySelector(`tr[data-batch='${batch}'] .state`);"
        " return el !== null && el.textContent === text; }",
        arg=[batch, text],
        timeout=15_000,
    )


def test_pause_and_cancel_buttons_control_the_batch(
    browser_page: Any, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """A worker crawls a slow one-host batch one request at a time; the page's pause stops it, its cancel
    completes it with every URL not yet done recorded as `cancelled`."""
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # the page asks before it cancels
    api_settings = ApiSettings(_env_file=None, token=TOKEN, read_token=READ_TOKEN, allowed_networks=["127.0.0.0/8"])
    worker_env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": "1"}
    with (
        ThreadedTargetSite() as slow,
        running(create_app(settings, api_settings)) as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api,
        workers(worker_env, 1, tmp_path, "--concurrency", "4"),
    ):
        urls = [slow.url(f"/delay?ms=700&n={i}") for i in range(30)]
        batch = api.post("/batches", json={"urls": urls}).json()["batch"]
        page.goto(f"{base}/?interval_ms=500")
        page.fill("#token", TOKEN)  # the actions need the full token
        page.click("#login button[type=submit]")
        row = f'tr[data-batch="{batch}"]'
        page.wait_for_selector(row)
        assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["done"] >= 1, 60, interval=0.2)

        page.click(f'{row} button[data-action="pause"]:not([disabled])')
        assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["state"] == "paused", 10, interval=0.1)
        _state_shown(page, batch, "paused")
        assert page.locator(f'{row} button[data-action="resume"]').is_enabled()
        time.sleep(2.0)  # the fetch in flight when it was paused ends
        done_paused = api.get(f"/batches/{batch}").json()["stats"]["done"]
        time.sleep(2.0)
        assert api.get(f"/batches/{batch}").json()["stats"]["done"] == done_paused < len(urls)
        _save(page, tmp_path, "dashboard-paused.png")

        page.click(f'{row} button[data-action="cancel"]')
        assert wait_until(lambda: api.get(f"/batches/{batch}").json()["stats"]["complete"], 15, interval=0.1)
        stats = api.get(f"/batches/{batch}").json()["stats"]
        assert stats["done"] == stats["total"] == len(urls)
        assert stats["error_counts"].get("cancelled") == len(urls) - done_paused, stats
        assert stats["cancelled_at"] is not None
        _state_shown(page, batch, "cancelled")
        shown = _shown(page, batch)
        assert (shown["done"], shown["failed"]) == (str(stats["done"]), str(stats["failed"]))
        for name in ("pause", "cancel"):
            assert page.locator(f'{row} button[data-action="{name}"]').is_disabled()
        _save(page, tmp_path, "dashboard-cancelled.png")
        assert page.errors == [], page.errors


def test_a_wrong_token_brings_back_the_form(browser_page: Any, settings: Settings) -> None:
    page = browser_page
    api_settings = ApiSettings(_env_file=None, token=TOKEN)
    with running(create_app(settings, api_settings)) as base:
        page.goto(base + "/")
        page.fill("#token", "not-the-token")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login", state="visible")
        assert "refused" in page.locator("#problem").inner_text()
        assert page.evaluate("() => sessionStorage.getItem('crawlq.token')") is None


def test_a_view_that_fails_is_named_with_the_reason(browser_page: Any, settings: Settings) -> None:
    """A source the API cannot read is named on the page with the API's sentence, and the others still show."""
    page = browser_page
    api_settings = ApiSettings(_env_file=None, token=TOKEN, read_token=READ_TOKEN, allowed_networks=["127.0.0.0/8"])
    redis = redis_sync.Redis.from_url(settings.redis_url)
    redis.set(keys.STATS_ALL, "not a hash")  # GET /totals: Redis answers WRONGTYPE
    try:
        with running(create_app(settings, api_settings)) as base:
            page.goto(f"{base}/?interval_ms=500")
            page.fill("#token", READ_TOKEN)
            page.click("#login button[type=submit]")
            page.wait_for_selector("#problem:not([hidden])")
            problem = page.locator("#problem").inner_text()
            assert "could not read: totals (HTTP 500: Redis at" in problem and "WRONGTYPE" in problem, problem
            assert "queue" not in problem and "hosts" not in problem, problem
            redis.delete(keys.STATS_ALL)
            page.wait_for_selector("#problem", state="hidden", timeout=10_000)  # the next tick reads it again
    finally:
        redis.delete(keys.STATS_ALL)
        redis.close()
